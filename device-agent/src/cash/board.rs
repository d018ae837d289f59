//! What each line read from the board does: a credit is recorded (and
//! acknowledged to a v2 board once on disk), `READY` tells what the board
//! speaks, `ERR:` is logged; the session loop in `serial.rs` acts on the
//! [`LineOutcome`].

use std::sync::atomic::Ordering;

use kiosk_schemas::CreditKind;

use super::line::{self, Line, Piece};
use super::outbox::{BoardRef, Recorded};
use super::serial::Acceptor;

/// What the board on the port speaks, as far as it has said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Board {
    /// Nothing heard yet on this port.
    Unknown,
    /// `READY`, `BILL:`, `COIN:`.
    V1,
    /// `READY:v2:<boot id>`.
    V2 { boot_id: String },
}

impl Acceptor {
    pub(super) async fn line(
        &self,
        piece: Piece,
        board: &mut Board,
        grace: Option<&str>,
    ) -> LineOutcome {
        let raw = match piece {
            Piece::Line(raw) => raw,
            Piece::TooLong => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("cash acceptor sent an over-long line; ignored");
                return LineOutcome::Done;
            }
        };
        match line::parse(&raw, self.config.max_credit) {
            Ok(Line::Credit { kind, amount }) => {
                if *board == Board::Unknown {
                    *board = Board::V1;
                }
                self.record(kind, amount, None, grace).await
            }
            Ok(Line::BoardCredit { seq, kind, amount }) => match board {
                Board::V2 { boot_id } => {
                    let at = BoardRef {
                        boot_id: boot_id.clone(),
                        seq,
                    };
                    self.record(kind, amount, Some(&at), grace).await
                }
                // Its boot id scopes its seq: without it a credit of a board
                // that reset unseen could pass for a duplicate. It re-sends
                // until acknowledged, so nothing is lost by waiting.
                _ => {
                    tracing::debug!(
                        seq,
                        "credit from a board whose boot id is unknown; asking HELLO"
                    );
                    LineOutcome::WhoAreYou
                }
            },
            Ok(Line::Ready) => {
                tracing::info!(
                    "cash acceptor ready (protocol v1: at most once on the serial line)"
                );
                *board = Board::V1;
                LineOutcome::Ready
            }
            Ok(Line::ReadyV2 { boot_id }) => {
                let fresh = *board
                    != Board::V2 {
                        boot_id: boot_id.clone(),
                    };
                if fresh {
                    tracing::info!(boot_id, "cash acceptor ready (protocol v2)");
                    match self.cash.outbox.forget_boots_other_than(&boot_id) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(
                            forgotten = n,
                            "credit ids of earlier board boots forgotten"
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not prune credit ids of earlier boots")
                        }
                    }
                }
                *board = Board::V2 { boot_id };
                LineOutcome::Ready
            }
            Ok(Line::Fault(text)) if text == "lease" => {
                tracing::warn!(
                    "cash acceptor inhibited itself: its lease ran out (the host was silent for 3 s)"
                );
                LineOutcome::Inhibited
            }
            Ok(Line::Fault(text)) if text == "full" => {
                tracing::warn!(
                    "cash acceptor inhibited itself: its buffer of unacknowledged credits is full"
                );
                LineOutcome::Done
            }
            Ok(Line::Fault(text)) => {
                tracing::error!(fault = text, "cash acceptor reports a fault");
                LineOutcome::Done
            }
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "garbled line from the cash acceptor ignored");
                LineOutcome::Done
            }
        }
    }

    async fn record(
        &self,
        kind: CreditKind,
        amount: i64,
        board: Option<&BoardRef>,
        grace: Option<&str>,
    ) -> LineOutcome {
        match self
            .cash
            .record(kind, amount, &self.config.currency, board, grace)
            .await
        {
            Ok(Recorded::New(a)) => {
                let event = &a.event;
                self.stats.credits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(seq = event.seq, kind = ?kind, amount, currency = %event.currency,
                    session = event.session_id.as_deref().unwrap_or("none"),
                    board_seq = ?event.board_seq, "credit recorded");
                self.board.set_cash_unacked(self.cash.outbox.len() as u64);
                self.recorded.notify_one();
                match board {
                    Some(b) => LineOutcome::Ack(b.seq),
                    None => LineOutcome::Done,
                }
            }
            Ok(Recorded::Duplicate { seq }) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq, board_seq = ?board.map(|b| b.seq), "credit reported again by the board; acknowledged again");
                match board {
                    Some(b) => LineOutcome::Ack(b.seq),
                    None => LineOutcome::Done,
                }
            }
            Err(e) => {
                self.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
                // The money is in the machine but not in our books: say so
                // loudly, with what an operator needs to reconcile. A v2
                // board keeps it and reports it again once we recover.
                tracing::error!(error = %e, kind = ?kind, amount, currency = %self.config.currency,
                    board_seq = ?board.map(|b| b.seq),
                    "CREDIT NOT RECORDED: store failed; disabling the acceptor");
                LineOutcome::Unrecorded
            }
        }
    }
}

pub(super) enum LineOutcome {
    Done,
    Ready,
    /// The board inhibited itself (`ERR:lease`): enable it again if wanted.
    Inhibited,
    /// Answer `ACK:<seq>`.
    Ack(u64),
    /// A v2 credit before the board said its boot id: ask `HELLO`.
    WhoAreYou,
    Unrecorded,
}

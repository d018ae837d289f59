//! The [`Sender`]: the outbox's credits and the acceptance reports to the
//! cloud.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kiosk_schemas::{CashState, Topic, wire};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Cash;
use crate::connection::Publisher;

/// Most credits published and not yet acknowledged at once. A kiosk that
/// buffered thousands of credits offline sends them in windows: a burst
/// larger than the broker's in-memory log for `kiosk/+/cash` (see
/// `kiosk_broker::BrokerConfig`) would lose its oldest messages there and
/// stall the drain until the next re-send.
pub const SEND_WINDOW: usize = 256;

/// Publishes the outbox's credits until the cloud acknowledges them, at most
/// [`SEND_WINDOW`] at a time, lowest `seq` first; and the acceptance
/// reports of [`Cash`] on `kiosk/<id>/cash/state`, plus the current one
/// after every reconnect.
pub struct Sender {
    /// The acceptance and outbox.
    pub cash: Cash,
    /// Reports from [`Cash::open`].
    pub states: mpsc::Receiver<CashState>,
    /// The MQTT session.
    pub publisher: Publisher,
    /// Woken after each recorded credit and each acknowledgement.
    pub recorded: Arc<Notify>,
    /// Changes after every CONNACK.
    pub connects: watch::Receiver<u64>,
    /// Re-send period for unacknowledged credits.
    pub resend_interval: Duration,
}

impl Sender {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // When each credit of the window was last published on this
        // connection: tokio's clock, like the resend tick, so the two agree
        // under a paused clock in tests.
        let mut sent: HashMap<u64, tokio::time::Instant> = HashMap::new();
        let mut tick = tokio::time::interval(self.resend_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state_topic = Topic::cash_state(self.publisher.kiosk());
        loop {
            let resend_older_than = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.recorded.notified() => None,
                state = self.states.recv() => {
                    if let Some(state) = state
                        && let Err(e) = self.publisher.try_publish(&state_topic, false, wire::encode(&state))
                    {
                        tracing::warn!(error = %e, "publish not enqueued");
                    }
                    continue;
                }
                r = self.connects.changed() => {
                    if r.is_err() {
                        break;
                    }
                    // A new connection: whatever was in flight may be lost.
                    sent.clear();
                    self.cash.report_current();
                    None
                }
                _ = tick.tick() => Some(self.resend_interval),
            };
            // Acknowledgements delete a prefix of the outbox, so the credits
            // in flight are always the lowest ones left.
            let window = match self.cash.outbox.unacked_window(SEND_WINDOW) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the cash outbox");
                    continue;
                }
            };
            // Acknowledged credits left the window from below.
            let lowest = window.first().map_or(u64::MAX, |e| e.seq);
            sent.retain(|seq, _| *seq >= lowest);
            for event in window {
                let due = match (sent.get(&event.seq), resend_older_than) {
                    (None, _) => true,
                    (Some(t), Some(age)) => t.elapsed() >= age,
                    (Some(_), None) => false,
                };
                if due {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.publisher.publish_cash(&event) => if let Err(e) = r {
                            tracing::debug!(error = %e, "credit not enqueued: session ended");
                        }
                    }
                    sent.insert(event.seq, tokio::time::Instant::now());
                }
            }
        }
    }
}

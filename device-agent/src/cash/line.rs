//! The cash acceptor's serial protocol (9600 baud, 8N1, lines end in `\n`,
//! an optional `\r` before it is ignored).
//!
//! From the acceptor (an Arduino in front of a bill/coin validator):
//!
//! | line | version | meaning |
//! |---|---|---|
//! | `READY:v2:<boot id>` | 2 | the board (re)started (or answers `HELLO`); boot id: 8 hex digits, new at every reset |
//! | `CREDIT:<seq>:<BILL\|COIN>:<minor units>` | 2 | money went in; `seq` counts from 1 per boot; re-sent every second until `ACK:<seq>` |
//! | `READY` | 1 | the board (re)started and listens for commands |
//! | `BILL:<minor units>` | 1 | a bank note was accepted, e.g. `BILL:1000` = 10.00 EUR |
//! | `COIN:<minor units>` | 1 | a coin was accepted, e.g. `COIN:200` |
//! | `ERR:<text>` | both | the board reports a fault (logged); `ERR:lease` (v2): it inhibited itself after 3 s without a line from the host |
//!
//! To the acceptor: `ENABLE` (accept money; repeated every second while
//! enabled, which renews a v2 board's lease), `DISABLE` (inhibit: refuse
//! money), and for v2 `ACK:<seq>` (the credit is on the kiosk's disk: the
//! board may forget it) and `HELLO` (answer `READY:v2:<boot id>` and re-send
//! what is unacknowledged, without a reset). Anything else from the
//! acceptor is a garbled line: logged, counted, never a credit.

use std::fmt;

use kiosk_schemas::CreditKind;

/// Longest line accepted, in bytes (without the newline). Longer input is
/// discarded up to the next newline.
pub const MAX_LINE: usize = 64;

/// Command that enables acceptance.
pub const ENABLE: &[u8] = b"ENABLE\n";
/// Command that inhibits acceptance.
pub const DISABLE: &[u8] = b"DISABLE\n";
/// Command that asks a v2 board for its boot id and unacknowledged credits.
pub const HELLO: &[u8] = b"HELLO\n";

/// `ACK:<seq>\n`: the credit `seq` of the board's current boot is on disk.
pub fn ack(seq: u64) -> Vec<u8> {
    format!("ACK:{seq}\n").into_bytes()
}

/// A line from the acceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Money went in.
    Credit {
        /// Note or coin.
        kind: CreditKind,
        /// Value in minor units, > 0.
        amount: i64,
    },
    /// Money went in, on a v2 board (`CREDIT:<seq>:<kind>:<amount>`).
    BoardCredit {
        /// The board's seq within its boot.
        seq: u64,
        /// Note or coin.
        kind: CreditKind,
        /// Value in minor units, > 0.
        amount: i64,
    },
    /// A v1 board started.
    Ready,
    /// A v2 board started, or answered `HELLO`.
    ReadyV2 {
        /// Its boot id: 8 lowercase hex digits.
        boot_id: String,
    },
    /// The board reports a fault.
    Fault(String),
}

/// Why a line is not valid protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not printable ASCII (noise on the wire).
    #[error("line is not printable ASCII: {0}")]
    Binary(Escaped),
    /// A `BILL:`/`COIN:`/`CREDIT:` line whose amount is not a whole number
    /// in `1..=max`.
    #[error("invalid amount in {0:?} (expected 1..={1} minor units)")]
    Amount(String, i64),
    /// A `READY:v2:` or `CREDIT:` line with a bad boot id, seq or kind.
    #[error("invalid v2 line {0:?}")]
    V2(String),
    /// Something else.
    #[error("unknown line {0:?}")]
    Unknown(String),
}

/// Bytes shown escaped, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped(pub Vec<u8>);

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Parses one line (without its `\n`), accepting amounts up to `max`
/// minor units.
///
/// # Errors
/// [`LineError`] for anything that is not exactly one of the lines of the
/// protocol.
pub fn parse(raw: &[u8], max: i64) -> Result<Line, LineError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    if !raw.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(LineError::Binary(Escaped(raw.to_vec())));
    }
    // Printable ASCII, so this cannot fail.
    let line = std::str::from_utf8(raw).unwrap_or_default().trim();
    if line == "READY" {
        return Ok(Line::Ready);
    }
    if let Some(id) = line.strip_prefix("READY:v2:") {
        if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Line::ReadyV2 {
                boot_id: id.to_ascii_lowercase(),
            });
        }
        return Err(LineError::V2(line.to_owned()));
    }
    if let Some(text) = line.strip_prefix("ERR:") {
        return Ok(Line::Fault(text.trim().to_owned()));
    }
    if let Some(rest) = line.strip_prefix("CREDIT:") {
        let mut parts = rest.splitn(3, ':');
        let (Some(seq), Some(kind), Some(digits)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LineError::V2(line.to_owned()));
        };
        let seq = number(seq).filter(|s| *s > 0);
        let kind = match kind {
            "BILL" => Some(CreditKind::Bill),
            "COIN" => Some(CreditKind::Coin),
            _ => None,
        };
        let (Some(seq), Some(kind)) = (seq, kind) else {
            return Err(LineError::V2(line.to_owned()));
        };
        let amount = amount(digits, max).ok_or_else(|| LineError::Amount(line.to_owned(), max))?;
        return Ok(Line::BoardCredit { seq, kind, amount });
    }
    let (kind, digits) = if let Some(d) = line.strip_prefix("BILL:") {
        (CreditKind::Bill, d)
    } else if let Some(d) = line.strip_prefix("COIN:") {
        (CreditKind::Coin, d)
    } else {
        return Err(LineError::Unknown(line.to_owned()));
    };
    match amount(digits, max) {
        Some(a) => Ok(Line::Credit { kind, amount: a }),
        None => Err(LineError::Amount(line.to_owned(), max)),
    }
}

/// A whole number of digits only: no sign, no spaces, no leading '+'.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn amount(digits: &str, max: i64) -> Option<i64> {
    number(digits)
        .and_then(|a| i64::try_from(a).ok())
        .filter(|a| (1..=max).contains(a))
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes. Feed it
/// what the port delivers; it yields complete lines and reports over-long
/// ones once, discarding them up to the next newline.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    overflow: bool,
}

/// One item from [`Splitter::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A complete line, without its `\n`.
    Line(Vec<u8>),
    /// A line that was too long; its bytes were dropped.
    TooLong,
}

impl Splitter {
    /// Consumes `bytes` and returns the lines completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.overflow {
                    out.push(Piece::TooLong);
                } else {
                    out.push(Piece::Line(std::mem::take(&mut self.buf)));
                }
                self.buf.clear();
                self.overflow = false;
            } else if self.overflow {
                // Drop until the newline.
            } else if self.buf.len() > MAX_LINE {
                self.overflow = true;
                self.buf.clear();
            } else {
                self.buf.push(b);
            }
        }
        out
    }

    #[cfg(test)]
    /// Forgets a partial line (after the port was reopened).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.overflow = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: i64 = 100_000;

    #[test]
    fn valid_lines() {
        let cases: &[(&[u8], Line)] = &[
            (
                b"BILL:1000",
                Line::Credit {
                    kind: CreditKind::Bill,
                    amount: 1000,
                },
            ),
            (
                b"COIN:200\r",
                Line::Credit {
                    kind: CreditKind::Coin,
                    amount: 200,
                },
            ),
            (
                b"COIN:1",
                Line::Credit {
                    kind: CreditKind::Coin,
                    amount: 1,
                },
            ),
            (
                b"BILL:100000",
                Line::Credit {
                    kind: CreditKind::Bill,
                    amount: 100_000,
                },
            ),
            (b"READY", Line::Ready),
            (
                b"READY:v2:0BADcafe",
                Line::ReadyV2 {
                    boot_id: "0badcafe".into(),
                },
            ),
            (
                b"CREDIT:7:COIN:200\r",
                Line::BoardCredit {
                    seq: 7,
                    kind: CreditKind::Coin,
                    amount: 200,
                },
            ),
            (
                b"CREDIT:1:BILL:100000",
                Line::BoardCredit {
                    seq: 1,
                    kind: CreditKind::Bill,
                    amount: 100_000,
                },
            ),
            (b" READY ", Line::Ready),
            (b"ERR:jam", Line::Fault("jam".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(&parse(raw, MAX).unwrap(), want, "{}", raw.escape_ascii());
        }
    }

    #[test]
    fn garbled_lines_are_never_credits() {
        for raw in [
            &b"BILL:abc"[..],
            b"BILL:",
            b"BILL:-500",
            b"BILL:+500",
            b"BILL:0",
            b"BILL:100001",
            b"BILL:99999999999999999999999",
            b"BILL: 500",
            b"BILL:5 00",
            b"bill:500",
            b"FOO",
            b"",
            b"COIN:1.50",
            b"\xff\xfe\x00BILL:500",
            b"BILL:500\x07",
            b"READY:v2:",
            b"READY:v2:123",
            b"READY:v2:xyz12345",
            b"READY:v2:123456789",
            b"CREDIT:1:COIN",
            b"CREDIT:0:COIN:200",
            b"CREDIT:-1:COIN:200",
            b"CREDIT:a:COIN:200",
            b"CREDIT:1:CASH:200",
            b"CREDIT:1:COIN:0",
            b"CREDIT:1:COIN:200:9",
            b"CREDIT:1:coin:200",
            b"CREDIT:99999999999999999999:COIN:200",
        ] {
            assert!(parse(raw, MAX).is_err(), "{}", raw.escape_ascii());
        }
        assert_eq!(parse(&[b'A'; 65], MAX), Err(LineError::TooLong));
    }

    #[test]
    fn splitter_handles_pieces_and_overlong_lines() {
        let mut s = Splitter::default();
        assert!(s.feed(b"BIL").is_empty());
        assert_eq!(
            s.feed(b"L:500\nCO"),
            vec![Piece::Line(b"BILL:500".to_vec())]
        );
        assert_eq!(s.feed(b"IN:100\n"), vec![Piece::Line(b"COIN:100".to_vec())]);
        let mut long = vec![b'x'; 500];
        long.extend_from_slice(b"\nREADY\n");
        assert_eq!(
            s.feed(&long),
            vec![Piece::TooLong, Piece::Line(b"READY".to_vec())]
        );
        s.feed(b"partial");
        s.reset();
        assert_eq!(s.feed(b"COIN:5\n"), vec![Piece::Line(b"COIN:5".to_vec())]);
    }
}

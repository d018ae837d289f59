//! The cash acceptor's serial protocol: arbitrary bytes from the wire go
//! through the line splitter and the parser. Neither may panic, a line is
//! never longer than the limit allows, and anything parsed as a credit is a
//! `BILL:`/`COIN:` line whose amount is within bounds and written in digits.
#![no_main]

use kiosk_agent::cash::line::{self, Line, Piece, Splitter};
use libfuzzer_sys::fuzz_target;

const MAX: i64 = 100_000;

fuzz_target!(|data: &[u8]| {
    let mut splitter = Splitter::default();
    for piece in splitter.feed(data) {
        let Piece::Line(raw) = piece else { continue };
        assert!(raw.len() <= line::MAX_LINE + 1);
        if let Ok(Line::Credit { amount, .. }) = line::parse(&raw, MAX) {
            assert!((1..=MAX).contains(&amount));
            let text = std::str::from_utf8(&raw).expect("a credit line is ASCII");
            let text = text.trim().trim_end_matches('\r');
            let digits = text
                .strip_prefix("BILL:")
                .or_else(|| text.strip_prefix("COIN:"))
                .expect("a credit line starts with BILL: or COIN:");
            let digits = digits.trim_end();
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits:?}");
            assert_eq!(digits.parse::<i64>().ok(), Some(amount));
        }
    }
    let _ = line::parse(data, i64::MAX);
});

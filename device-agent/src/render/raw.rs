//! A best-effort preview of ready-made ESC/POS bytes (`raw` documents): the
//! text they print, line by line, with the commands stepped over. Good
//! enough for a technician reading logs; not a printer emulator.

use super::layout::hard_wrap;

const DLE: u8 = 0x10;
const ESC: u8 = 0x1b;
const FS: u8 = 0x1c;
const GS: u8 = 0x1d;
const NUL: u8 = 0x00;

/// Most text lines the preview shows.
const MAX_LINES: usize = 100;

/// A note with the size, then the text lines found in `bytes` (cut to
/// `columns`; bytes above 0x7F shown as `?`), at most 100 of them.
pub(crate) fn preview(bytes: &[u8], columns: u8) -> String {
    let width = usize::from(columns).max(1);
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            ESC | GS | FS | DLE => {
                let (len, feeds) = command_len(&bytes[i..]);
                if feeds {
                    lines.push(std::mem::take(&mut current));
                }
                i += len;
                continue;
            }
            b'\n' | 0x0c => lines.push(std::mem::take(&mut current)),
            0x20..=0x7e => current.push(char::from(b)),
            0x80..=0xff => current.push('?'),
            _ => {}
        }
        i += 1;
    }
    lines.push(current);
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }

    let mut text_lines = lines.iter().flat_map(|l| {
        let l = l.trim_end();
        if l.is_empty() {
            vec![String::new()]
        } else {
            hard_wrap(l, width)
        }
    });
    let mut out = vec![format!("[raw ESC/POS, {} bytes]", bytes.len())];
    out.extend(text_lines.by_ref().take(MAX_LINES));
    if text_lines.next().is_some() {
        out.push("[...]".to_owned());
    }
    let mut preview = out.join("\n");
    preview.push('\n');
    preview
}

/// Length in bytes of the command at the start of `bytes` (which starts with
/// `ESC`, `GS`, `FS` or `DLE`), and whether it feeds a line. Covers what
/// receipts use; anything else is taken to have one parameter byte.
fn command_len(bytes: &[u8]) -> (usize, bool) {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let word = |i: usize| usize::from(at(i)) | (usize::from(at(i + 1)) << 8);
    let until_nul = |from: usize| {
        bytes
            .iter()
            .skip(from)
            .position(|&b| b == NUL)
            .map_or(bytes.len(), |p| from + p + 1)
    };
    let len = match (at(0), at(1)) {
        // Print and feed n lines / n dots.
        (ESC, b'd' | b'J') => return (3, true),
        (ESC, b'@' | b'2') => 2,
        // Drawer kick: m t1 t2.
        (ESC, b'p') => 5,
        // Horizontal tab positions, NUL-terminated.
        (ESC, b'D') => until_nul(2),
        // Bit image: m nL nH, then n columns of 1 or 3 bytes.
        (ESC, b'*') => 5 + word(3) * if at(2) >= 32 { 3 } else { 1 },
        (GS, b'V') if at(2) >= 65 => 4,
        // GS ( x pL pH data: QR codes, graphics, ...
        (GS, b'(') => 5 + word(3),
        // Barcode: GS k m data NUL (m <= 6) or GS k m n data.
        (GS, b'k') if at(2) <= 6 => until_nul(3),
        (GS, b'k') => 4 + usize::from(at(3)),
        // Raster image: GS v 0 m xL xH yL yH data.
        (GS, b'v') => 8 + word(4) * word(6),
        (GS, b'L' | b'W') => 4,
        (FS, b'.' | b'&') => 2,
        // DLE EOT n, plus a parameter for n = 7, 8, 18.
        (DLE, 0x04) if matches!(at(2), 7 | 8 | 18) => 4,
        _ => 3,
    };
    (len.max(1), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_text_lines_and_skips_commands() {
        let bytes = b"\x1b@\x1ba\x01Hello shop\n\x1d(k\x03\x001Q0\x1dk\x024006381333931\x00Bye\x1bd\x01\x1dVA\x00";
        assert_eq!(
            preview(bytes, 32),
            format!("[raw ESC/POS, {} bytes]\nHello shop\nBye\n", bytes.len())
        );
    }

    #[test]
    fn long_lines_are_cut_and_high_bytes_shown_as_question_marks() {
        let bytes = b"Caf\x82 0123456789\n";
        assert_eq!(
            preview(bytes, 8),
            "[raw ESC/POS, 16 bytes]\nCaf? 012\n3456789\n"
        );
    }

    #[test]
    fn truncated_commands_do_not_panic() {
        for bytes in [
            &b"\x1b"[..],
            b"\x1d(k\xff\xff",
            b"\x1dv0\x00\xff\xff\xff\xff",
            b"\x1dk\x02123",
        ] {
            assert!(preview(bytes, 32).starts_with("[raw ESC/POS"));
        }
    }
}

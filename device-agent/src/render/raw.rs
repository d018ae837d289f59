//! A best-effort preview of ready-made ESC/POS bytes (`raw` documents, and
//! what the demo's printer file received): the text they print, line by
//! line, read in the code page `ESC t` selected on this printer (and the
//! double-byte mode between `FS &` and `FS .`), with images and QR codes
//! as markers and the other commands stepped over. Good enough for a
//! technician reading logs; not a printer emulator.

use super::RenderOptions;
use super::charset::Page;
use super::layout::hard_wrap;

const DLE: u8 = 0x10;
const ESC: u8 = 0x1b;
const FS: u8 = 0x1c;
const GS: u8 = 0x1d;
const NUL: u8 = 0x00;

/// Most text lines the preview shows.
const MAX_LINES: usize = 100;

/// An image being printed band by band: its width and the rows so far, in
/// dots.
#[derive(Debug, Clone, Copy)]
struct Image {
    width: usize,
    height: usize,
}

/// The lines read so far.
struct Reader<'a> {
    lines: Vec<String>,
    current: String,
    image: Option<Image>,
    page: Option<&'a Page>,
    wide: bool,
    /// The last thing read was an `ESC *` band, which the LF after it
    /// prints: that LF is part of the image.
    after_column_band: bool,
}

impl Reader<'_> {
    /// An image band `width` × `height` dots: part of the image being
    /// printed when as wide, else a new one. `column`: an `ESC *` band.
    fn band(&mut self, width: usize, height: usize, column: bool) {
        self.after_column_band = column;
        match &mut self.image {
            Some(image) if image.width == width => image.height += height,
            _ => {
                self.end_image();
                self.end_text();
                self.image = Some(Image { width, height });
            }
        }
    }

    fn end_image(&mut self) {
        if let Some(Image { width, height }) = self.image.take() {
            self.lines.push(format!("[IMAGE {width}x{height}]"));
        }
    }

    fn end_text(&mut self) {
        if !self.current.is_empty() {
            self.lines.push(std::mem::take(&mut self.current));
        }
    }

    /// A line feed: ends the text line, or the image (but the one that
    /// prints an `ESC *` band, which the next band may continue).
    fn feed(&mut self) {
        if self.image.is_some() && self.current.is_empty() {
            if !std::mem::take(&mut self.after_column_band) {
                self.end_image();
            }
        } else {
            self.end_image();
            self.lines.push(std::mem::take(&mut self.current));
        }
    }

    fn text(&mut self, c: char) {
        self.after_column_band = false;
        self.end_image();
        self.current.push(c);
    }

    /// A line of its own (a QR code's marker).
    fn marker(&mut self, text: String) {
        self.after_column_band = false;
        self.end_image();
        self.end_text();
        self.lines.push(text);
    }
}

/// A note with the size, then the text lines found in `bytes` (cut to the
/// printer's columns; bytes above 0x7F read in the code page selected,
/// `?` where it has no character), `[IMAGE WxH]` (dots) for raster,
/// column and graphics images and `[QR: data]` for QR codes, at most 100
/// lines.
pub(crate) fn preview(bytes: &[u8], opts: &RenderOptions) -> String {
    let width = usize::from(opts.columns).max(1);
    let charset = &opts.charset;
    let mut r = Reader {
        lines: Vec::new(),
        current: String::new(),
        image: None,
        page: Some(charset.start_page()),
        wide: false,
        after_column_band: false,
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            ESC | GS | FS | DLE => {
                let cmd = &bytes[i..];
                let at = |k: usize| usize::from(cmd.get(k).copied().unwrap_or(0));
                let word = |k: usize| at(k) | (at(k + 1) << 8);
                match (b, at(1) as u8) {
                    (ESC, b'@') => {
                        r.page = Some(charset.start_page());
                        r.wide = false;
                    }
                    (ESC, b't') => r.page = charset.page_numbered(at(2) as u8),
                    (FS, b'&') => r.wide = true,
                    (FS, b'.') => r.wide = false,
                    // GS v 0 m xL xH yL yH: bytes a row, rows.
                    (GS, b'v') => r.band(word(4) * 8, word(6), false),
                    // ESC * m nL nH: columns of 8 or 24 dots.
                    (ESC, b'*') => r.band(word(3), if at(2) >= 32 { 24 } else { 8 }, true),
                    // GS ( L pL pH 48 112 a bx by c xL xH yL yH: store.
                    (GS, b'(') if at(2) == usize::from(b'L') && at(6) == 112 => {
                        r.band(word(11), word(13), false);
                    }
                    // GS ( k pL pH 49 80 48 d1..dk: store QR code data.
                    (GS, b'(') if at(2) == usize::from(b'k') && at(5) == 49 && at(6) == 80 => {
                        let end = (5 + word(3)).min(cmd.len());
                        let data = cmd.get(8..end).unwrap_or_default();
                        r.marker(format!("[QR: {}]", String::from_utf8_lossy(data)));
                    }
                    _ => {}
                }
                let (len, feeds) = command_len(cmd);
                if feeds {
                    r.feed();
                }
                i += len;
                continue;
            }
            b'\n' | 0x0c => r.feed(),
            0x20..=0x7e => r.text(char::from(b)),
            // A double-byte character's second byte is 0x40 or above.
            0x80..=0xff if r.wide && bytes.get(i + 1).is_some_and(|&b| b >= 0x40) => {
                let c = charset.wide_char([b, bytes[i + 1]]);
                r.text(c.unwrap_or('?'));
                i += 2;
                continue;
            }
            // A lead byte without its second: no character.
            0x80..=0xff if r.wide => r.text('?'),
            0x80..=0xff => {
                let c = r.page.and_then(|p| p.table.char_of(b));
                r.text(c.unwrap_or('?'));
            }
            _ => {}
        }
        i += 1;
    }
    r.end_image();
    let mut lines = r.lines;
    lines.push(r.current);
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

    fn opts(columns: u8) -> RenderOptions {
        RenderOptions::new(columns, super::super::CodePage::PC437)
    }

    #[test]
    fn extracts_text_lines_and_skips_commands() {
        let bytes = b"\x1b@\x1ba\x01Hello shop\n\x1d(k\x03\x001Q0\x1dk\x024006381333931\x00Bye\x1bd\x01\x1dVA\x00";
        assert_eq!(
            preview(bytes, &opts(32)),
            format!("[raw ESC/POS, {} bytes]\nHello shop\nBye\n", bytes.len())
        );
    }

    #[test]
    fn long_lines_are_cut_and_high_bytes_read_in_the_start_page() {
        let bytes = b"Caf\x82 0123456789\n";
        assert_eq!(
            preview(bytes, &opts(8)),
            "[raw ESC/POS, 16 bytes]\nCaf\u{e9} 012\n3456789\n"
        );
    }

    /// What the renderer sends for text in several scripts, an image and a
    /// QR code reads back as the text, `[IMAGE WxH]` and `[QR: ...]`.
    #[test]
    fn rendered_documents_read_back_in_their_code_pages() {
        use kiosk_schemas::Document;
        let text = "Gr\u{fc}\u{df}e \u{20ac}5\n\u{3b3}\u{3b5}\u{3b9}\u{3ac} \u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}\n\u{10d}\u{159} \u{15f}\u{11f}\u{131}\n\u{5e9}\u{5dc}\u{5d5}\u{5dd}\n";
        let o = RenderOptions::new(32, "PC858".parse().unwrap());
        let doc: Document =
            serde_json::from_value(serde_json::json!({"kind": "text", "text": text})).unwrap();
        let out = super::super::render(&doc, &o).unwrap();
        let seen = preview(&out.bytes, &o);
        // Hebrew prints in visual order: the preview shows the paper.
        let want = "Gr\u{fc}\u{df}e \u{20ac}5\n\u{3b3}\u{3b5}\u{3b9}\u{3ac} \u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}\n\u{10d}\u{159} \u{15f}\u{11f}\u{131}\n\u{5dd}\u{5d5}\u{5dc}\u{5e9}\n";
        assert!(seen.ends_with(want), "{seen}");

        let receipt = serde_json::json!({"kind": "receipt", "items": [], "total": 0,
            "currency": "EUR", "qr": "https://example.com/r/7",
            "header": [{"image": {"data": png_4x48(), "width": 48}}, "Shop"]});
        let doc: Document = serde_json::from_value(receipt).unwrap();
        let out = super::super::render(&doc, &o).unwrap();
        let seen = preview(&out.bytes, &o);
        assert!(seen.contains("\n[IMAGE 48x4]\n"), "{seen}");
        assert!(seen.contains("\n[QR: https://example.com/r/7]\n"), "{seen}");
        for mode in [
            super::super::ImageMode::BitImage,
            super::super::ImageMode::Graphics,
        ] {
            let o = RenderOptions {
                image_mode: mode,
                ..o.clone()
            };
            let seen = preview(&super::super::render(&doc, &o).unwrap().bytes, &o);
            let height = if mode == super::super::ImageMode::BitImage {
                24
            } else {
                4
            };
            assert!(
                seen.contains(&format!("\n[IMAGE 48x{height}]\n")),
                "{mode:?}: {seen}"
            );
        }
    }

    /// A 48 × 4 black PNG, base64.
    fn png_4x48() -> String {
        use base64::Engine as _;
        let img = image::GrayImage::from_pixel(48, 4, image::Luma([0]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    #[test]
    fn chinese_reads_back_in_double_byte_mode() {
        let bytes = b"\x1b@\x1c&\xc4\xe3\xba\xc3\x1c. ok\n";
        assert!(preview(bytes, &opts(32)).ends_with("\n\u{4f60}\u{597d} ok\n"));
        // A lone lead byte before a line feed does not swallow the feed.
        let bytes = b"\x1c&\xc4\nnext\n";
        assert!(preview(bytes, &opts(32)).ends_with("\n?\nnext\n"));
    }

    /// Two images of one width with a line feed between are two images;
    /// the `ESC *` bands of one image, each printed by its LF, are one.
    #[test]
    fn images_end_at_a_line_feed_but_column_bands_go_on() {
        let raster = b"\x1dv0\x00\x01\x00\x02\x00\xff\xff";
        let bytes = [&raster[..], b"\n", raster, b"\n"].concat();
        assert!(preview(&bytes, &opts(32)).ends_with("]\n[IMAGE 8x2]\n[IMAGE 8x2]\n"));
        let band = b"\x1b*\x21\x02\x00\xff\xff\xff\xff\xff\xff\n";
        let bytes = [&band[..], band, b"after\n"].concat();
        assert!(preview(&bytes, &opts(32)).ends_with("]\n[IMAGE 2x48]\nafter\n"));
    }

    #[test]
    fn truncated_commands_do_not_panic() {
        for bytes in [
            &b"\x1b"[..],
            b"\x1d(k\xff\xff",
            b"\x1dv0\x00\xff\xff\xff\xff",
            b"\x1dk\x02123",
        ] {
            assert!(preview(bytes, &opts(32)).starts_with("[raw ESC/POS"));
        }
    }
}

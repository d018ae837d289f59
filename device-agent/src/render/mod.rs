//! Turns a print job's [`Document`] into the ESC/POS bytes of one copy and a
//! plain-text preview of it, for one printer's width (32 or 48 columns,
//! font A) and code page. Pure: no I/O.
//!
//! Every ESC/POS command is built by the `escpos` crate and captured in
//! memory, except what escpos 0.20 lacks, sent as raw bytes: the pulse
//! times of `ESC p` and the buzzer's `ESC B n t` (see `layout.rs`), and
//! images, `GS v 0` or `ESC *` bands (see [`image`] for why not escpos's). Bytes and preview come from the same list of laid-out lines, so
//! the preview (shown by the demo, written to logs) is what the paper shows.

mod amount;
pub(crate) mod capture;
pub mod charset;
pub mod fallback;
pub mod image;
mod layout;
mod options;
pub mod profile;
mod raw;

use std::sync::Arc;

use kiosk_schemas::{
    Document, ImageWidth, Receipt, ReceiptImage, ReceiptLine, TextDocument, Ticket, TicketAlign,
    TicketLine,
};

pub use amount::format_amount;
pub use image::Bitmap;
pub use options::{
    CodePage, Cutter, ImageMode, PageCode, RenderOptions, UnknownCodePage, default_dots, page_code,
};

use layout::{Align, Layout, Line, Size, Style};

/// One copy of a document, ready for the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// ESC/POS bytes to send as they are.
    pub bytes: Vec<u8>,
    /// Plain-text picture of the ticket, `\n`-terminated lines no wider than
    /// the printer's columns, with markers for what is not text: `[QR: ...]`,
    /// `[BARCODE ean13: ...]`, `--- cut ---`, `[drawer kick]`.
    pub preview: String,
}

/// Why a document could not be rendered. The job fails with this as reason;
/// printing it again would not help.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A raw document's `data` is not valid base64.
    #[error("{0}")]
    Raw(String),
    /// `escpos` refused to build a command: barcode data its symbology does
    /// not accept, a QR code over 7089 bytes, ...
    #[error("cannot build ESC/POS: {0}")]
    Escpos(#[from] escpos::errors::PrinterError),
    /// A receipt image is not a PNG or JPEG within the limits; the reason
    /// names the field (`document.header[1].image.data ...`).
    #[error("{0}")]
    Image(String),
}

/// Renders one copy of `doc` (the caller repeats the bytes for copies).
///
/// - `receipt` and `text`: bytes start with `ESC @` (initialize) and
///   `ESC t n` (code page) and end with `GS V` (cut) when `cut` is set; a
///   receipt with `open_drawer` ends with `ESC p` (drawer kick, pin 2) after
///   the cut. Characters the code page cannot encode print as `?`.
/// - `ticket`: the same start and cut; with `beep`, `ESC B 3 3` (three
///   150 ms beeps) right after `ESC t`, so the kitchen hears the ticket as
///   it starts printing. Lines as described on `ticket_layout`.
/// - `raw`: the decoded bytes untouched (nothing prepended), with a preview
///   of the text found in them.
///
/// # Errors
/// [`RenderError::Raw`] for bad base64, [`RenderError::Escpos`] for codes
/// `escpos` refuses.
pub fn render(doc: &Document, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    match doc {
        Document::Raw(raw) => {
            let bytes = raw.decode().map_err(RenderError::Raw)?;
            let preview = raw::preview(&bytes, opts);
            Ok(Rendered { bytes, preview })
        }
        Document::Text(text) => finish(&text_layout(text, opts)),
        Document::Receipt(receipt) => finish(&receipt_layout(receipt, opts)?),
        Document::Ticket(ticket) => finish(&ticket_layout(ticket, opts)),
    }
}

fn finish(layout: &Layout) -> Result<Rendered, RenderError> {
    Ok(Rendered {
        bytes: layout.to_bytes()?,
        preview: layout.to_preview(),
    })
}

fn text_layout(doc: &TextDocument, opts: &RenderOptions) -> Layout {
    let mut layout = Layout::new(opts);
    layout.text(&doc.text, Align::Left, false, Size::Normal);
    if doc.cut {
        layout.push(Line::Cut);
    }
    layout
}

/// The logo (with `logo` and a printer that has one), header centered
/// (first text line large and bold), a rule, one line per item with its
/// amount flush right, a rule, subtotal, tax and a bold TOTAL, footer
/// centered, QR code, barcode, cut, drawer kick. Images in header and
/// footer as [`image_line`] makes them.
fn receipt_layout(r: &Receipt, opts: &RenderOptions) -> Result<Layout, RenderError> {
    let mut layout = Layout::new(opts);
    let amount = |minor: i64| format_amount(minor, &r.currency);

    if r.logo
        && let Some(logo) = &opts.logo
    {
        layout.push(Line::Image {
            bitmap: Arc::clone(logo),
            align: Align::Center,
            mode: opts.image_mode,
        });
    }
    let mut first_text = true;
    for (i, line) in r.header.iter().enumerate() {
        match line {
            ReceiptLine::Text(text) if first_text => {
                first_text = false;
                layout.text(text, Align::Center, true, Size::Large);
            }
            ReceiptLine::Text(text) => layout.text(text, Align::Center, false, Size::Normal),
            ReceiptLine::Image { image } => {
                layout.push(image_line(
                    image,
                    &format!("document.header[{i}].image"),
                    opts,
                )?);
            }
        }
    }
    layout.rule();
    for item in &r.items {
        let prefix = format!("{} x ", item.quantity);
        layout.columns(
            &prefix,
            &item.name,
            &amount(item.amount),
            false,
            Size::Normal,
        );
    }
    layout.rule();
    if let Some(subtotal) = r.subtotal {
        layout.columns("", "Subtotal", &amount(subtotal), false, Size::Normal);
    }
    if let Some(tax) = r.tax {
        layout.columns("", "Tax", &amount(tax), false, Size::Normal);
    }
    let total_label = format!("TOTAL {}", r.currency.as_str());
    layout.columns("", &total_label, &amount(r.total), true, Size::Tall);
    if !r.footer.is_empty() {
        layout.blank();
        for (i, line) in r.footer.iter().enumerate() {
            match line {
                ReceiptLine::Text(text) => layout.text(text, Align::Center, false, Size::Normal),
                ReceiptLine::Image { image } => {
                    layout.push(image_line(
                        image,
                        &format!("document.footer[{i}].image"),
                        opts,
                    )?);
                }
            }
        }
    }
    if let Some(qr) = &r.qr {
        layout.push(Line::Qr(qr.clone()));
    }
    if let Some(barcode) = &r.barcode {
        layout.push(Line::Barcode {
            format: barcode.format,
            data: barcode.data.clone(),
        });
    }
    if r.cut {
        layout.push(Line::Cut);
    }
    if r.open_drawer {
        layout.push(Line::DrawerKick);
    }
    Ok(layout)
}

/// A receipt image, `width` dots wide (`full`: the printer's dots; never
/// wider than them), dithered; `at` names it in errors.
fn image_line(image: &ReceiptImage, at: &str, opts: &RenderOptions) -> Result<Line, RenderError> {
    let bytes = image.validate(at).map_err(RenderError::Image)?;
    let dots = u32::from(opts.dots);
    let width = match image.width {
        ImageWidth::Full => dots,
        ImageWidth::Dots(n) => u32::from(n).min(dots),
    };
    let bitmap = Bitmap::from_encoded(&bytes, |_| width)
        .map_err(|e| RenderError::Image(format!("{at}.data: {e}")))?;
    Ok(Line::Image {
        bitmap: Arc::new(bitmap),
        align: align(image.align),
        mode: opts.image_mode,
    })
}

fn align(a: TicketAlign) -> Align {
    match a {
        TicketAlign::Left => Align::Left,
        TicketAlign::Center => Align::Center,
        TicketAlign::Right => Align::Right,
    }
}

/// A kitchen ticket: each text line in its style (`ESC a`, `ESC E`,
/// `ESC -`, `GS B`, `GS !`), word-wrapped to the columns left at its width
/// (a width of 2 halves them); a separator is a full-width rule; an item is
/// `2 x Burger` in bold, each modifier below it as `    - no onions` and
/// the note as `    NOTE: well done`, all at normal size, wrapped with
/// hanging indents. Then the cut when `cut` is set.
fn ticket_layout(t: &Ticket, opts: &RenderOptions) -> Layout {
    let mut layout = Layout::new(opts);
    if t.beep {
        layout.push(Line::Beep);
    }
    for line in &t.lines {
        match line {
            TicketLine::Text(text) => {
                let style = Style {
                    align: align(text.align),
                    bold: text.bold,
                    underline: text.underline,
                    invert: text.invert,
                    size: Size::from_factors(text.size[0], text.size[1]),
                };
                layout.styled(&text.text, style);
            }
            TicketLine::Separator { .. } => layout.rule(),
            TicketLine::Item { item } => {
                let prefix = format!("{} x ", item.quantity);
                layout.hanging(&prefix, &item.name, true);
                let indent = " ".repeat(prefix.len());
                for modifier in &item.modifiers {
                    layout.hanging(&format!("{indent}- "), modifier, false);
                }
                if let Some(note) = &item.note {
                    layout.hanging(&format!("{indent}NOTE: "), note, false);
                }
            }
        }
    }
    if t.cut {
        layout.push(Line::Cut);
    }
    layout
}

/// A short test page for the `test_print` command: kiosk id, printer name,
/// width, code page, a ruler as wide as the line, the time (UTC) and a line
/// of accented characters to check the code page; ends with a cut.
pub fn test_page(printer_name: &str, opts: &RenderOptions, kiosk_id: &str) -> Rendered {
    let layout = test_page_layout(printer_name, opts, kiosk_id);
    let preview = layout.to_preview();
    let bytes = match layout.to_bytes() {
        Ok(bytes) => bytes,
        Err(e) => {
            // Only text and a cut, in a code page with a table: escpos has
            // nothing to refuse. Should that change, the page still prints
            // as plain text rather than not at all.
            tracing::error!(error = %e, "cannot build the test page; sending it as plain text");
            preview.clone().into_bytes()
        }
    };
    Rendered { bytes, preview }
}

fn test_page_layout(printer_name: &str, opts: &RenderOptions, kiosk_id: &str) -> Layout {
    let columns = usize::from(opts.columns);
    let mut layout = Layout::new(opts);
    layout.text("TEST PAGE", Align::Center, true, Size::Large);
    layout.rule();
    let rows = [
        ("kiosk", kiosk_id.to_owned()),
        ("printer", printer_name.to_owned()),
        ("width", format!("{columns} columns")),
        ("code page", opts.charset.start_page().name.clone()),
        ("code pages", opts.charset.pages().len().to_string()),
        (
            "time",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        ),
    ];
    for (label, value) in rows {
        layout.text(
            &format!("{label:<10} {value}"),
            Align::Left,
            false,
            Size::Normal,
        );
    }
    layout.rule();
    // Tens above units: the last digit printed is the line's last column.
    let tens: String = (1..=columns)
        .map(|i| if i % 10 == 0 { digit(i / 10) } else { ' ' })
        .collect();
    let units: String = (1..=columns).map(digit).collect();
    layout.text(&tens, Align::Left, false, Size::Normal);
    layout.text(&units, Align::Left, false, Size::Normal);
    layout.rule();
    // Accented letters and currency signs, to see the code page at work.
    let chars = "chars      \u{c4}\u{d6}\u{dc} \u{e4}\u{f6}\u{fc} \u{e9} \u{f1} \u{a3} \u{20ac}";
    layout.text(chars, Align::Left, false, Size::Normal);
    layout.text(
        "(? = not in the code page)",
        Align::Left,
        false,
        Size::Normal,
    );
    layout.push(Line::Cut);
    layout
}

/// The last decimal digit of `n`.
fn digit(n: usize) -> char {
    char::from(b'0' + (n % 10) as u8)
}

#[cfg(test)]
mod tests {
    use kiosk_schemas::{Barcode, BarcodeFormat, Currency, RawDocument, ReceiptItem};

    use super::options::PAGE_CODES;
    use super::*;

    const ESC_INIT: &[u8] = b"\x1b@";
    const GS_CUT: &[u8] = b"\x1dV";
    const ESC_DRAWER: &[u8] = b"\x1bp";
    const GS_QR: &[u8] = b"\x1d(k";
    const GS_BARCODE: &[u8] = b"\x1dk";

    fn opts(columns: u8) -> RenderOptions {
        RenderOptions {
            columns,
            ..RenderOptions::default()
        }
        .with_only_page(PageCode::PC858)
    }

    fn receipt() -> Receipt {
        Receipt {
            logo: false,
            header: vec![
                "Burger Corner".into(),
                "12 Market Street".into(),
                "Order 1042".into(),
            ],
            items: vec![
                item(2, "Cheeseburger", 1700),
                item(1, "Fries large", 450),
                item(
                    1,
                    "Double bacon cheeseburger with extra pickles and onions",
                    1290,
                ),
                item(1, "Coupon", -200),
            ],
            subtotal: Some(2973),
            tax: Some(267),
            total: 3240,
            currency: Currency::new("EUR").unwrap(),
            footer: vec!["Thank you!".into()],
            qr: None,
            barcode: None,
            cut: true,
            open_drawer: false,
        }
    }

    fn item(quantity: u32, name: &str, amount: i64) -> ReceiptItem {
        ReceiptItem {
            quantity,
            name: name.into(),
            amount,
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn render_receipt(r: Receipt, columns: u8) -> Rendered {
        render(&Document::Receipt(r), &opts(columns)).unwrap()
    }

    #[test]
    fn page_code_names_are_case_insensitive() {
        assert_eq!(page_code("PC437"), Some(PageCode::PC437));
        assert_eq!(page_code("pc858"), Some(PageCode::PC858));
        assert_eq!(page_code("WPC1252"), Some(PageCode::WPC1252));
        assert_eq!(page_code("iso-8859-15"), Some(PageCode::ISO8859_15));
        assert_eq!(page_code("PC866"), Some(PageCode::PC866));
        assert_eq!(page_code("PC720"), None, "escpos has no table for it");
        assert_eq!(page_code("UTF-8"), None);
        assert_eq!(page_code(""), None);
    }

    #[test]
    fn every_offered_page_code_can_render_text() {
        for code in PAGE_CODES {
            let opts = RenderOptions {
                columns: 32,
                ..RenderOptions::default()
            }
            .with_only_page(code);
            let doc = Document::Text(TextDocument {
                text: "Hello \u{e9}\u{20ac}".into(),
                cut: true,
            });
            let out = render(&doc, &opts).unwrap_or_else(|e| panic!("{code}: {e}"));
            assert!(out.preview.starts_with("Hello "), "{code}: {}", out.preview);
        }
    }

    #[test]
    fn ascii_is_sent_as_ascii_in_every_code_page() {
        let printable: String = (0x20u8..0x7f).map(char::from).collect();
        for code in PAGE_CODES {
            let opts = RenderOptions {
                columns: 100,
                ..RenderOptions::default()
            }
            .with_only_page(code);
            let doc = Document::Text(TextDocument {
                text: printable.clone(),
                cut: false,
            });
            let out = render(&doc, &opts).unwrap();
            assert!(contains(&out.bytes, printable.as_bytes()), "{code}");
        }
    }

    #[test]
    fn receipt_bytes_start_with_init_and_code_page_and_end_with_cut() {
        let out = render_receipt(receipt(), 48);
        // ESC @, then ESC t 19 (PC858).
        assert!(
            out.bytes.starts_with(b"\x1b@\x1bt\x13"),
            "{:02x?}",
            &out.bytes[..8]
        );
        assert!(contains(&out.bytes[out.bytes.len() - 4..], GS_CUT));
        assert!(!contains(&out.bytes, ESC_DRAWER));
    }

    #[test]
    fn receipt_contains_every_name_and_amount_as_text() {
        let r = receipt();
        for columns in [32, 48] {
            let out = render_receipt(r.clone(), columns);
            for item in &r.items {
                let first_word = item.name.split(' ').next().unwrap();
                assert!(contains(&out.bytes, first_word.as_bytes()), "{}", item.name);
                let amount = format_amount(item.amount, &r.currency);
                assert!(contains(&out.bytes, amount.as_bytes()), "{amount}");
                assert!(out.preview.contains(&amount), "{amount}");
            }
            for text in ["29.73", "2.67", "32.40", "TOTAL EUR", "-2.00"] {
                assert!(contains(&out.bytes, text.as_bytes()), "{text}");
                assert!(out.preview.contains(text), "{text}");
            }
            // Wrapped names still hold every word, in the preview too.
            for word in r.items[2].name.split(' ') {
                assert!(out.preview.contains(word), "{word}");
                assert!(contains(&out.bytes, word.as_bytes()), "{word}");
            }
        }
    }

    #[test]
    fn widths_lay_out_differently_and_preview_fits() {
        let narrow = render_receipt(receipt(), 32);
        let wide = render_receipt(receipt(), 48);
        assert_ne!(narrow.preview, wide.preview);
        assert_ne!(narrow.bytes, wide.bytes);
        for (out, columns) in [(&narrow, 32), (&wide, 48)] {
            for line in out.preview.lines() {
                assert!(line.chars().count() <= columns, "{columns}: {line:?}");
            }
            let rule = "-".repeat(columns);
            assert!(out.preview.lines().any(|l| l == rule), "{columns}");
            // Amounts are flush right on item lines.
            let line = out
                .preview
                .lines()
                .find(|l| l.starts_with("2 x Cheeseburger"))
                .unwrap();
            assert_eq!(line.chars().count(), columns);
            assert!(line.ends_with("17.00"));
        }
        assert!(narrow.preview.lines().count() > wide.preview.lines().count());
    }

    #[test]
    fn qr_barcode_and_drawer_only_when_asked() {
        let plain = render_receipt(receipt(), 48);
        for marker in [GS_QR, GS_BARCODE, ESC_DRAWER] {
            assert!(!contains(&plain.bytes, marker));
        }
        assert!(!plain.preview.contains("[QR"));
        assert!(!plain.preview.contains("[BARCODE"));
        assert!(!plain.preview.contains("[drawer kick]"));

        let mut r = receipt();
        r.qr = Some("https://example.com/r/1042".into());
        r.barcode = Some(Barcode {
            format: BarcodeFormat::Ean13,
            data: "4006381333931".into(),
        });
        r.open_drawer = true;
        let out = render_receipt(r, 48);
        assert!(contains(&out.bytes, GS_QR));
        assert!(contains(&out.bytes, b"https://example.com/r/1042"));
        assert!(contains(&out.bytes, GS_BARCODE));
        assert!(contains(&out.bytes, b"4006381333931"));
        // ESC p 0 with both pulse times, last.
        assert!(
            out.bytes.ends_with(b"\x1bp\x00\x19\xfa"),
            "{:02x?}",
            &out.bytes[out.bytes.len() - 8..]
        );
        assert!(out.preview.contains("[QR: https://example.com/r/1042]"));
        assert!(out.preview.contains("[BARCODE ean13: 4006381333931]"));
        assert!(out.preview.ends_with("--- cut ---\n[drawer kick]\n"));
    }

    #[test]
    fn no_cut_when_not_asked() {
        let mut r = receipt();
        r.cut = false;
        let out = render_receipt(r, 48);
        assert!(!contains(&out.bytes, GS_CUT));
        assert!(!out.preview.contains("--- cut ---"));
    }

    #[test]
    fn bad_barcode_data_is_an_error_not_a_panic() {
        let mut r = receipt();
        r.barcode = Some(Barcode {
            format: BarcodeFormat::Ean13,
            data: "12ab".into(),
        });
        let err = render(&Document::Receipt(r), &opts(48)).unwrap_err();
        assert!(matches!(err, RenderError::Escpos(_)), "{err}");
    }

    #[test]
    fn characters_outside_the_code_page_print_as_question_marks() {
        let mut r = receipt();
        r.items = vec![item(1, "Caf\u{e9} \u{6f22}\u{5b57} \u{1b}x", 100)];
        let out = render(&Document::Receipt(r), &opts(48)).unwrap();
        assert!(
            out.preview.contains("1 x Caf\u{e9} ?? ?x"),
            "{}",
            out.preview
        );
        // é is 0x82 in PC858; the escape never reaches the printer as such.
        assert!(contains(&out.bytes, b"1 x Caf\x82 ?? ?x"));
    }

    #[test]
    fn text_documents_print_lines_and_wrap() {
        let doc = Document::Text(TextDocument {
            text: "Table 4\n\n2x Soup of the day with bread and butter\n".into(),
            cut: true,
        });
        let out = render(&doc, &opts(32)).unwrap();
        assert_eq!(
            out.preview,
            "Table 4\n\n2x Soup of the day with bread\nand butter\n--- cut ---\n"
        );
        assert!(out.bytes.starts_with(ESC_INIT));
        assert!(contains(&out.bytes[out.bytes.len() - 4..], GS_CUT));

        let doc = Document::Text(TextDocument {
            text: "no cut".into(),
            cut: false,
        });
        let out = render(&doc, &opts(32)).unwrap();
        assert!(!contains(&out.bytes, GS_CUT));
        assert_eq!(out.preview, "no cut\n");
    }

    #[test]
    fn raw_passes_through_byte_identical() {
        let bytes: Vec<u8> = (0..=255).collect();
        let doc = Document::Raw(RawDocument::from_bytes(&bytes));
        let out = render(&doc, &opts(48)).unwrap();
        assert_eq!(out.bytes, bytes);
        assert!(out.preview.starts_with("[raw ESC/POS, 256 bytes]"));

        let bad = Document::Raw(RawDocument {
            data: "not base64!".into(),
        });
        let err = render(&bad, &opts(48)).unwrap_err();
        assert!(err.to_string().contains("document.data"), "{err}");
    }

    #[test]
    fn raw_preview_of_rendered_text_shows_the_same_lines() {
        let doc = Document::Text(TextDocument {
            text: "Table 4\n\n2x Soup of the day with bread and butter".into(),
            cut: true,
        });
        let rendered = render(&doc, &opts(32)).unwrap();
        let raw = Document::Raw(RawDocument::from_bytes(&rendered.bytes));
        let out = render(&raw, &opts(32)).unwrap();
        let expected = rendered.preview.replace("--- cut ---\n", "");
        let note = format!("[raw ESC/POS, {} bytes]\n", rendered.bytes.len());
        assert_eq!(out.preview, note + &expected);
    }

    #[test]
    fn test_page_names_kiosk_printer_and_fits() {
        for columns in [32, 48] {
            let out = test_page("receipt", &opts(columns), "demo-1");
            assert!(out.bytes.starts_with(ESC_INIT));
            assert!(out.preview.contains("demo-1"));
            assert!(out.preview.contains("receipt"));
            assert!(out.preview.contains("PC858"));
            assert!(out.preview.contains(&format!("{columns} columns")));
            let ruler: String = (1..=usize::from(columns)).map(digit).collect();
            assert!(out.preview.lines().any(|l| l == ruler));
            for line in out.preview.lines() {
                assert!(line.chars().count() <= usize::from(columns), "{line:?}");
            }
        }
    }
}

/// Tickets checked through testkit's ESC/POS decoder (written from the
/// command reference), so the bytes are read as a printer would.
#[cfg(test)]
mod ticket_tests {
    use kiosk_testkit::escpos::{self, Align as At, Command, Cut, Style as Seen, StyledLine};

    use super::*;

    fn ticket(columns: u8, json: serde_json::Value) -> (Vec<Command>, Vec<StyledLine>, String) {
        let doc: Document = serde_json::from_value(json).unwrap();
        doc.validate().unwrap();
        let out = render(
            &doc,
            &RenderOptions {
                columns,
                ..RenderOptions::default()
            }
            .with_only_page(PageCode::PC858),
        )
        .unwrap();
        let commands = escpos::decode(&out.bytes);
        let lines = escpos::lines(&commands);
        (commands, lines, out.preview)
    }

    fn issue_example() -> serde_json::Value {
        serde_json::json!({"kind":"ticket","beep":true,"lines":[
            {"text":"TABLE 12","size":[2,2],"bold":true,"align":"center"},
            {"separator":true},
            {"item":{"quantity":2,"name":"Burger","modifiers":["no onions","extra cheese"],"note":"well done"}},
            {"text":"Allergy: nuts","invert":true}]})
    }

    fn plain() -> Seen {
        Seen::default()
    }

    #[test]
    fn styles_in_effect_per_line_and_the_beep() {
        let (commands, lines, preview) = ticket(32, issue_example());
        // ESC @, ESC t, then the beep before any text.
        assert_eq!(commands[0], Command::Init);
        assert!(matches!(commands[1], Command::CodePage(_)));
        assert_eq!(
            commands[2],
            Command::Beep {
                times: 3,
                duration: 3
            }
        );
        assert_eq!(
            commands.last(),
            Some(&Command::Cut(Cut::FeedCut {
                partial: false,
                feed: 0
            }))
        );
        let text: Vec<(&str, Seen)> = lines.iter().map(|l| (l.text.as_str(), l.style)).collect();
        let bold = Seen {
            bold: true,
            ..plain()
        };
        assert_eq!(
            text,
            vec![
                (
                    "TABLE 12",
                    Seen {
                        bold: true,
                        width: 2,
                        height: 2,
                        align: At::Center,
                        ..plain()
                    }
                ),
                ("--------------------------------", plain()),
                ("2 x Burger", bold),
                ("    - no onions", plain()),
                ("    - extra cheese", plain()),
                ("    NOTE: well done", plain()),
                (
                    "Allergy: nuts",
                    Seen {
                        invert: true,
                        ..plain()
                    }
                ),
            ]
        );
        assert!(preview.starts_with("[beep]\n"), "{preview}");
    }

    #[test]
    fn no_beep_unless_asked_and_no_cut_when_off() {
        let (commands, _, _) = ticket(
            48,
            serde_json::json!({"kind":"ticket","cut":false,"lines":[{"text":"x"}]}),
        );
        assert!(!commands.iter().any(|c| matches!(
            c,
            Command::Beep { .. } | Command::Buzzer { .. } | Command::Cut(_)
        )));
    }

    #[test]
    fn sizes_underline_and_right_alignment() {
        let (_, lines, _) = ticket(
            48,
            serde_json::json!({"kind":"ticket","lines":[
                {"text":"wide","size":[3,1],"underline":true,"align":"right"},
                {"text":"tall","size":[1,8]},
                {"text":"back to plain"}]}),
        );
        let got: Vec<(&str, Seen)> = lines.iter().map(|l| (l.text.as_str(), l.style)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "wide",
                    Seen {
                        underline: 1,
                        width: 3,
                        align: At::Right,
                        ..plain()
                    }
                ),
                (
                    "tall",
                    Seen {
                        height: 8,
                        ..plain()
                    }
                ),
                ("back to plain", plain()),
            ]
        );
    }

    #[test]
    fn wraps_for_32_and_48_columns_and_size_2_halves_them() {
        let long = "Two cheeseburgers without pickles and a side of onion rings please";
        let json = |size: u8| {
            serde_json::json!({"kind":"ticket","lines":[
                {"text":long,"size":[size,size]},
                {"separator":true},
                {"item":{"quantity":12,"name":long,"modifiers":[long]}}]})
        };
        for columns in [32u8, 48] {
            for size in [1u8, 2] {
                let (_, lines, _) = ticket(columns, json(size));
                let width = usize::from(columns / size);
                let text_lines: Vec<&StyledLine> = lines
                    .iter()
                    .take_while(|l| !l.text.starts_with("---"))
                    .collect();
                assert!(text_lines.len() > 1, "{columns}/{size}: {lines:?}");
                for l in &text_lines {
                    assert!(l.text.len() <= width, "{columns}/{size}: {:?}", l.text);
                    assert_eq!((l.style.width, l.style.height), (size, size));
                }
                let joined: Vec<&str> = text_lines.iter().map(|l| l.text.as_str()).collect();
                assert_eq!(joined.join(" "), long);
                // The separator is the full width at normal size.
                let rule = &lines[text_lines.len()];
                assert_eq!(rule.text, "-".repeat(usize::from(columns)));
                assert_eq!(rule.style, plain());
                // Item and modifier wrap with hanging indents, normal size.
                let rest = &lines[text_lines.len() + 1..];
                assert!(rest[0].text.starts_with("12 x Two") && rest[0].style.bold);
                assert!(rest.iter().all(|l| l.text.len() <= usize::from(columns)));
                assert!(rest.iter().all(|l| l.style.width == 1));
                let modifier = rest
                    .iter()
                    .position(|l| l.text.starts_with("     - "))
                    .unwrap();
                assert!(modifier > 1, "the name wraps: {rest:?}");
                assert!(
                    rest[1..modifier]
                        .iter()
                        .all(|l| l.text.starts_with("     ") && !l.text.starts_with("      "))
                );
                assert!(
                    rest[modifier + 1..]
                        .iter()
                        .all(|l| l.text.starts_with("       "))
                );
            }
        }
        // Exactly where the 32-column text breaks.
        let (_, lines, _) = ticket(32, json(1));
        assert_eq!(lines[0].text, "Two cheeseburgers without");
        assert_eq!(lines[1].text, "pickles and a side of onion");
        assert_eq!(lines[2].text, "rings please");
    }
}

/// Images, read back with testkit's ESC/POS decoder and compared dot by dot
/// with bitmaps computed here from the source pixels.
#[cfg(test)]
mod image_tests {
    use ::image::imageops::{self, BiLevel};
    use ::image::{GrayImage, ImageFormat, Luma};
    use base64::Engine as _;
    use kiosk_schemas::{Currency, ReceiptImage};
    use kiosk_testkit::escpos::{self, Align as At, Command};

    use super::*;

    /// `img` as a base64 PNG.
    fn png(img: &GrayImage) -> String {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    fn image(img: &GrayImage, align: TicketAlign, width: ImageWidth) -> ReceiptLine {
        ReceiptLine::Image {
            image: ReceiptImage {
                data: png(img),
                align,
                width,
            },
        }
    }

    fn receipt(header: Vec<ReceiptLine>, logo: bool) -> Document {
        Document::Receipt(Receipt {
            logo,
            header,
            items: vec![],
            subtotal: None,
            tax: None,
            total: 0,
            currency: Currency::new("EUR").unwrap(),
            footer: vec![],
            qr: None,
            barcode: None,
            cut: true,
            open_drawer: false,
        })
    }

    /// The raster bands in `bytes`: (mode, width bytes, height, data).
    fn bands(bytes: &[u8]) -> Vec<(u8, u16, u16, Vec<u8>)> {
        escpos::decode(bytes)
            .into_iter()
            .filter_map(|c| match c {
                Command::Raster {
                    mode,
                    width_bytes,
                    height,
                    data,
                } => Some((mode, width_bytes, height, data)),
                _ => None,
            })
            .collect()
    }

    /// The bands stacked and unpacked, cropped to `width` dots: true = black.
    fn dots(bands: &[(u8, u16, u16, Vec<u8>)], width: u32) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for (_, width_bytes, height, data) in bands {
            let row_bytes = usize::from(*width_bytes);
            assert_eq!(data.len(), row_bytes * usize::from(*height));
            for row in data.chunks(row_bytes) {
                rows.push(
                    (0..width as usize)
                        .map(|x| row[x / 8] & (0x80 >> (x % 8)) != 0)
                        .collect(),
                );
            }
        }
        rows
    }

    /// What the paper should show for `img`: black below 128.
    fn expected(img: &GrayImage) -> Vec<Vec<bool>> {
        (0..img.height())
            .map(|y| {
                (0..img.width())
                    .map(|x| img.get_pixel(x, y).0[0] < 128)
                    .collect()
            })
            .collect()
    }

    fn render_with(doc: &Document, opts: &RenderOptions) -> Vec<u8> {
        render(doc, opts).unwrap().bytes
    }

    #[test]
    fn black_and_white_prints_dot_for_dot_in_one_band() {
        // A checkerboard of 3×1 blocks plus a black last column: no gray,
        // so dithering must leave it exactly as it is.
        let img = GrayImage::from_fn(16, 4, |x, y| {
            Luma([if (x / 3 + y) % 2 == 0 || x == 15 {
                0
            } else {
                255
            }])
        });
        let doc = receipt(
            vec![image(&img, TicketAlign::Left, ImageWidth::Dots(16))],
            false,
        );
        let b = bands(&render_with(&doc, &RenderOptions::default()));
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].0, b[0].1, b[0].2), (0, 2, 4));
        assert_eq!(dots(&b, 16), expected(&img));
    }

    /// The raster bands of `bytes` read as a camera would: a grey image
    /// for an independent QR decoder (`rqrr`), whose content is returned.
    fn read_qr(bytes: &[u8]) -> String {
        let b = bands(bytes);
        assert!(!b.is_empty(), "no raster image");
        let width = u32::from(b[0].1) * 8;
        let rows = dots(&b, width);
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(width as usize, rows.len(), |x, y| {
                if rows[y][x] { 0 } else { 255 }
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code on the paper");
        grids[0].decode().unwrap().1
    }

    fn with_qr(data: &str) -> Document {
        let Document::Receipt(mut r) = receipt(vec![], false) else {
            unreachable!()
        };
        r.qr = Some(data.to_owned());
        Document::Receipt(r)
    }

    /// 58 mm printers without `GS ( k` (the profiles POS-5890, ZJ-5870,
    /// TH230 ...) get the QR code as an image that reads back, and
    /// printers without a cutter get a feed past the tear bar instead of
    /// `GS V`.
    #[test]
    fn printers_without_qr_or_cutter_get_an_image_and_a_feed() {
        let data = "https://example.com/r/1042?t=ab12";
        let opts = RenderOptions {
            native_qr: false,
            cutter: Cutter::None,
            ..RenderOptions::new(32, CodePage::PC437)
        };
        let bytes = render_with(&with_qr(data), &opts);
        let commands = escpos::decode(&bytes);
        assert!(
            !commands
                .iter()
                .any(|c| matches!(c, Command::Code2d { .. } | Command::Cut(_))),
            "no GS ( k, no GS V"
        );
        assert_eq!(read_qr(&bytes), data);
        // 5 dots a module on 32 columns, as GS ( k would draw it, with the
        // quiet zone: version 3 (29 modules) + 8.
        assert_eq!(bands(&bytes)[0].1, (37 * 5_u16).div_ceil(8));
        assert_eq!(commands.last(), Some(&Command::FeedLines(4)));
        let preview = render(&with_qr(data), &opts).unwrap().preview;
        assert!(
            preview.contains("[QR: https://example.com/r/1042?"),
            "{preview}"
        );

        let partial = RenderOptions {
            cutter: Cutter::Partial,
            ..opts.clone()
        };
        let commands = escpos::decode(&render_with(&with_qr(data), &partial));
        assert_eq!(
            commands.last(),
            Some(&Command::Cut(escpos::Cut::FeedCut {
                partial: true,
                feed: 0
            }))
        );
        // The default: the printer's own QR code and a full cut.
        let commands = escpos::decode(&render_with(&with_qr(data), &RenderOptions::default()));
        assert!(
            commands
                .iter()
                .any(|c| matches!(c, Command::Code2d { cn: 49, .. }))
        );
        assert_eq!(
            commands.last(),
            Some(&Command::Cut(escpos::Cut::FeedCut {
                partial: false,
                feed: 0
            }))
        );
    }

    /// A QR code never comes out wider than the printer: modules shrink,
    /// and one that cannot fit at one dot a module is an error, as is data
    /// no QR version holds (the renderer then prints the data as text).
    #[test]
    fn qr_images_fit_the_printer_and_overlong_data_is_refused() {
        let data = "x".repeat(300);
        let wide = layout::qr_bitmap(&data, 6, 576).unwrap();
        let narrow = layout::qr_bitmap(&data, 6, 200).unwrap();
        assert!(
            wide.width() > 200 && narrow.width() <= 200,
            "{wide:?} {narrow:?}"
        );
        assert!(layout::qr_bitmap(&"x".repeat(3000), 6, 576).is_err());
        // 300 bytes: version 10, 57 modules + 8: never wider than 64 dots.
        let err = layout::qr_bitmap(&data, 6, 64).unwrap_err();
        assert!(err.contains("do not fit 64 dots"), "{err}");
    }

    #[test]
    fn a_gray_gradient_is_floyd_steinberg_dithered() {
        let img = GrayImage::from_fn(16, 4, |x, y| Luma([(x * 16 + y * 4) as u8]));
        let mut want = img.clone();
        imageops::dither(&mut want, &BiLevel);
        let doc = receipt(
            vec![image(&img, TicketAlign::Left, ImageWidth::Dots(16))],
            false,
        );
        let b = bands(&render_with(&doc, &RenderOptions::default()));
        let got = dots(&b, 16);
        assert_eq!(got, expected(&want));
        // Dithered, not thresholded: the dark half is not all black.
        let black = got.iter().flatten().filter(|d| **d).count();
        assert!(black > 0 && black < 64, "{black}");
        assert!(got[0][..8].iter().any(|d| !d) || got[1][..8].iter().any(|d| !d));
    }

    #[test]
    fn tall_images_go_out_in_bands_of_24_rows() {
        let img = GrayImage::from_fn(20, 50, |x, y| {
            Luma([if (x + y) % 2 == 0 { 0 } else { 255 }])
        });
        let doc = receipt(
            vec![image(&img, TicketAlign::Center, ImageWidth::Dots(20))],
            false,
        );
        let b = bands(&render_with(&doc, &RenderOptions::default()));
        let heights: Vec<u16> = b.iter().map(|x| x.2).collect();
        assert_eq!(heights, [24, 24, 2]);
        assert!(b.iter().all(|x| x.0 == 0 && x.1 == 3));
        assert_eq!(dots(&b, 20), expected(&img));
        // The padding bits of the last byte of each row are white.
        assert!(
            b.iter()
                .all(|x| x.3.chunks(3).all(|row| row[2] & 0x0F == 0))
        );
    }

    #[test]
    fn bit_image_mode_sends_esc_star_bands_of_24_dots() {
        let img = GrayImage::from_fn(20, 50, |x, y| {
            Luma([if (x * 7 + y * 3) % 5 < 2 { 0 } else { 255 }])
        });
        let doc = receipt(
            vec![image(&img, TicketAlign::Left, ImageWidth::Dots(20))],
            false,
        );
        let opts = RenderOptions {
            image_mode: ImageMode::BitImage,
            ..RenderOptions::default()
        };
        let commands = escpos::decode(&render_with(&doc, &opts));
        assert!(bands(&render_with(&doc, &opts)).is_empty(), "no GS v 0");
        let start = commands
            .iter()
            .position(|c| *c == Command::LineSpacing(Some(24)))
            .unwrap();
        let mut rows = vec![vec![false; 20]; 72];
        let mut band = 0;
        let mut i = start + 1;
        while let Command::BitImage { mode, width, data } = &commands[i] {
            assert_eq!((*mode, *width, data.len()), (33, 20, 60));
            for (x, column) in data.chunks(3).enumerate() {
                for (k, byte) in column.iter().enumerate() {
                    for bit in 0..8 {
                        rows[band * 24 + k * 8 + bit][x] = byte & (0x80 >> bit) != 0;
                    }
                }
            }
            assert_eq!(commands[i + 1], Command::Lf);
            band += 1;
            i += 2;
        }
        assert_eq!(band, 3);
        assert_eq!(commands[i], Command::LineSpacing(None));
        assert_eq!(rows[..50], expected(&img)[..]);
        assert!(
            rows[50..].iter().flatten().all(|d| !d),
            "below the image: white"
        );
    }

    #[test]
    fn graphics_mode_stores_and_prints_bands_of_24_rows() {
        let img = GrayImage::from_fn(20, 50, |x, y| {
            Luma([if (x * 7 + y * 3) % 5 < 2 { 0 } else { 255 }])
        });
        let doc = receipt(
            vec![image(&img, TicketAlign::Left, ImageWidth::Dots(20))],
            false,
        );
        let opts = RenderOptions {
            image_mode: ImageMode::Graphics,
            ..RenderOptions::default()
        };
        let bytes = render_with(&doc, &opts);
        assert!(bands(&bytes).is_empty(), "no GS v 0");
        let commands = escpos::decode(&bytes);
        let mut rows: Vec<Vec<bool>> = Vec::new();
        let mut heights = Vec::new();
        for pair in commands.windows(2) {
            if let [
                Command::GraphicsStore {
                    tone,
                    scale,
                    color,
                    width,
                    height,
                    data,
                },
                next,
            ] = pair
            {
                assert_eq!((*tone, *scale, *color, *width), (48, (1, 1), 49, 20));
                assert_eq!(*next, Command::GraphicsPrint, "each band printed");
                heights.push(*height);
                for row in data.chunks(3) {
                    rows.push(
                        (0..20)
                            .map(|x| row[x / 8] & (0x80 >> (x % 8)) != 0)
                            .collect(),
                    );
                }
            }
        }
        assert_eq!(heights, [24, 24, 2]);
        assert_eq!(rows, expected(&img));
    }

    #[test]
    fn images_scale_to_their_width_and_never_beyond_the_printer() {
        let black = GrayImage::from_pixel(16, 4, Luma([0]));
        let check = |width, dots_, want_bytes: u16, want_rows: u16| {
            let doc = receipt(vec![image(&black, TicketAlign::Center, width)], false);
            let opts = RenderOptions {
                dots: dots_,
                ..RenderOptions::default()
            };
            let b = bands(&render_with(&doc, &opts));
            assert!(b.iter().all(|x| x.1 == want_bytes), "{width:?}");
            assert_eq!(b.iter().map(|x| x.2).sum::<u16>(), want_rows, "{width:?}");
            let rows = dots(&b, u32::from(want_bytes) * 8);
            assert!(rows.iter().flatten().all(|d| *d), "{width:?}: all black");
        };
        check(ImageWidth::Dots(32), 576, 4, 8);
        check(ImageWidth::Full, 576, 72, 144);
        check(ImageWidth::Full, 384, 48, 96);
        check(ImageWidth::Dots(1000), 384, 48, 96);
    }

    #[test]
    fn images_are_aligned_with_esc_a() {
        let img = GrayImage::from_pixel(16, 4, Luma([0]));
        for (align, want) in [
            (TicketAlign::Left, At::Left),
            (TicketAlign::Center, At::Center),
            (TicketAlign::Right, At::Right),
        ] {
            // After a centered text line, so even `left` must be sent.
            let doc = receipt(
                vec!["Shop".into(), image(&img, align, ImageWidth::Dots(16))],
                false,
            );
            let commands = escpos::decode(&render_with(&doc, &RenderOptions::default()));
            let at = commands
                .iter()
                .position(|c| matches!(c, Command::Raster { .. }))
                .unwrap();
            let last_align = commands[..at].iter().rev().find_map(|c| match c {
                Command::Align(a) => Some(*a),
                _ => None,
            });
            assert_eq!(last_align, Some(want), "{align:?}");
        }
    }

    #[test]
    fn the_logo_prints_first_when_asked_for() {
        let logo = GrayImage::from_fn(24, 2, |x, _| Luma([if x < 12 { 0 } else { 255 }]));
        let opts = RenderOptions {
            logo: Some(Arc::new(Bitmap::from_bilevel(&logo))),
            ..RenderOptions::default()
        };
        let with = render(&receipt(vec!["Shop".into()], true), &opts).unwrap();
        let commands = escpos::decode(&with.bytes);
        let first_raster = commands
            .iter()
            .position(|c| matches!(c, Command::Raster { .. }))
            .unwrap();
        let first_text = commands
            .iter()
            .position(|c| matches!(c, Command::Text(_)))
            .unwrap();
        assert!(first_raster < first_text);
        let b = bands(&with.bytes);
        assert_eq!((b.len(), b[0].1, b[0].2), (1, 3, 2));
        assert_eq!(dots(&b, 24), expected(&logo));
        assert_eq!(
            with.preview.lines().next().map(str::trim),
            Some("[IMAGE 24x2]")
        );

        let without = render(&receipt(vec!["Shop".into()], false), &opts).unwrap();
        assert!(bands(&without.bytes).is_empty());
        // Asked for, but the printer has none: nothing, no error.
        let none = render(
            &receipt(vec!["Shop".into()], true),
            &RenderOptions::default(),
        );
        assert!(bands(&none.unwrap().bytes).is_empty());
    }

    #[test]
    fn a_bad_image_fails_naming_the_field() {
        let doc = receipt(
            vec![
                "Shop".into(),
                ReceiptLine::Image {
                    image: ReceiptImage {
                        data: "bm90IGFuIGltYWdl".into(),
                        align: TicketAlign::Center,
                        width: ImageWidth::Full,
                    },
                },
            ],
            false,
        );
        let e = render(&doc, &RenderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("document.header[1].image.data"), "{e}");
    }
}

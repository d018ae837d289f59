//! The one layout step: a document becomes a list of [`Line`]s that already
//! fit the paper width, and that list becomes both the ESC/POS bytes
//! ([`Layout::to_bytes`]) and the plain-text preview ([`Layout::to_preview`]),
//! so the two cannot drift apart.

use std::sync::Arc;

use escpos::errors::Result as EscposResult;
use escpos::printer::Printer;
use escpos::utils::{
    CashDrawer, JustifyMode, QRCodeCorrectionLevel, QRCodeModel, QRCodeOption, UnderlineMode,
};
use kiosk_schemas::BarcodeFormat;

use super::capture::{Capture, capture};
use super::charset::{Charset, columns_of, text_columns};
use super::fallback::{Fonts, Look};
use super::image::Bitmap;
use super::options::{Cutter, ImageMode, RenderOptions};

/// `ESC p m t1 t2` takes two pulse times after the pin, but escpos 0.20's
/// `cash_drawer` emits only `ESC p m`: a printer would then take the next
/// two bytes of the stream as t1 and t2. These are the missing parameters,
/// in units of 2 ms: 50 ms on, 500 ms off, the values drawer makers quote.
const DRAWER_PULSE_TIMES: [u8; 2] = [25, 250];

/// `ESC B n t`: beep `n` times, each `t` × 50 ms. escpos 0.20 has no
/// buzzer command, so these go out as raw bytes. `ESC B` rather than
/// Epson's `ESC ( A`: the kitchen printers with a buzzer we meet
/// (Xprinter, Rongta, HPRT and other Epson-compatibles) implement `ESC B`,
/// while `ESC ( A` is model-specific on Epson TMs (its function and
/// parameter bytes differ between models). Three beeps of 150 ms.
pub(crate) const BEEP: [u8; 4] = [0x1B, b'B', 3, 3];

/// Columns a tab advances to a multiple of, in text documents.
const TAB_STOP: usize = 8;

/// Narrowest left column of a two-column line before the right part moves
/// to a line of its own.
const MIN_LEFT_WIDTH: usize = 6;

/// Horizontal position of a text line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Flush left; right-aligned parts are padded with spaces.
    Left,
    /// Centered by the printer (`ESC a 1`) and padded in the preview.
    Center,
    /// Flush right by the printer (`ESC a 2`) and padded in the preview.
    Right,
}

/// Character size (`GS !`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    /// 1×1.
    Normal,
    /// Double height: same width, so the line keeps all its columns.
    Tall,
    /// Double width and height: half the columns.
    Large,
    /// Any other `GS !` size, width and height each 1 to 8: the columns
    /// divided by the width.
    Scaled {
        /// Width multiplier, 1 to 8.
        width: u8,
        /// Height multiplier, 1 to 8.
        height: u8,
    },
}

impl Size {
    /// The size of `width` × `height` (clamped to 1..=8), named when it has
    /// a name.
    pub(crate) fn from_factors(width: u8, height: u8) -> Size {
        match (width.clamp(1, 8), height.clamp(1, 8)) {
            (1, 1) => Size::Normal,
            (1, 2) => Size::Tall,
            (2, 2) => Size::Large,
            (width, height) => Size::Scaled { width, height },
        }
    }
}

/// How a line of text looks: what `ESC a`, `ESC E`, `ESC -`, `GS B` and
/// `GS !` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    pub(crate) align: Align,
    pub(crate) bold: bool,
    pub(crate) underline: bool,
    pub(crate) invert: bool,
    pub(crate) size: Size,
}

impl Style {
    /// The state after `ESC @`.
    pub(crate) const PLAIN: Style = Style {
        align: Align::Left,
        bold: false,
        underline: false,
        invert: false,
        size: Size::Normal,
    };

    /// Codes are centered; the other modes do not apply to them.
    const CODE: Style = Style {
        align: Align::Center,
        ..Style::PLAIN
    };

    pub(crate) fn of(align: Align, bold: bool, size: Size) -> Style {
        Style {
            align,
            bold,
            size,
            ..Style::PLAIN
        }
    }
}

/// One step of the printed ticket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// One printed line of text that fits the width at its size.
    Text { text: String, style: Style },
    /// A QR code, centered: `GS ( k` on printers that draw them, else an
    /// image ([`qr_bitmap`]).
    Qr(String),
    /// A 1-D barcode (`GS k`), centered, digits printed below.
    Barcode { format: BarcodeFormat, data: String },
    /// A cut, as the printer has one ([`Cutter`]).
    Cut,
    /// Cash drawer kick on pin 2 (`ESC p`).
    DrawerKick,
    /// The buzzer ([`BEEP`]).
    Beep,
    /// An image, aligned by `ESC a`, in bands of `GS v 0` or `ESC *`.
    Image {
        bitmap: Arc<Bitmap>,
        align: Align,
        mode: ImageMode,
    },
}

/// Builds the lines of one ticket for one printer: its width, character
/// tables and fonts.
pub(crate) struct Layout {
    columns: usize,
    charset: Arc<Charset>,
    fonts: Option<Arc<Fonts>>,
    dots: u16,
    image_mode: ImageMode,
    native_qr: bool,
    cutter: Cutter,
    lines: Vec<Line>,
}

impl Layout {
    /// An empty ticket for the printer of `opts` (`opts.columns` wide in
    /// font A).
    pub(crate) fn new(opts: &RenderOptions) -> Self {
        Layout {
            columns: usize::from(opts.columns).max(1),
            charset: Arc::clone(&opts.charset),
            fonts: opts.fonts.clone(),
            dots: opts.dots,
            image_mode: opts.image_mode,
            native_qr: opts.native_qr,
            cutter: opts.cutter,
            lines: Vec::new(),
        }
    }

    /// Characters per line at `size`.
    fn width(&self, size: Size) -> usize {
        match size {
            Size::Large => (self.columns / 2).max(1),
            Size::Scaled { width, .. } => (self.columns / usize::from(width.max(1))).max(1),
            Size::Normal | Size::Tall => self.columns,
        }
    }

    /// Adds `text`, split at `\n` and word-wrapped to the width. An empty
    /// string is one empty line; a final `\n` adds none.
    pub(crate) fn text(&mut self, text: &str, align: Align, bold: bool, size: Size) {
        self.styled(text, Style::of(align, bold, size));
    }

    /// [`Layout::text`] in any style.
    pub(crate) fn styled(&mut self, text: &str, style: Style) {
        let width = self.width(style.size);
        let text = text.strip_suffix('\n').unwrap_or(text);
        for raw in text.split('\n') {
            let clean = self.sanitize(raw);
            for piece in wrap(&clean, width) {
                self.lines.push(Line::Text { text: piece, style });
            }
        }
    }

    /// Adds an empty line.
    pub(crate) fn blank(&mut self) {
        self.push_text(String::new(), false, Size::Normal);
    }

    /// Adds a full-width line of dashes.
    pub(crate) fn rule(&mut self) {
        self.push_text("-".repeat(self.columns), false, Size::Normal);
    }

    /// Adds `prefix` + `body` on the left and `right` flush right on the same
    /// line: `2 x Cheeseburger ....... 17.00`. A long body wraps below
    /// itself, indented by the prefix's width.
    pub(crate) fn columns(
        &mut self,
        prefix: &str,
        body: &str,
        right: &str,
        bold: bool,
        size: Size,
    ) {
        let width = self.width(size);
        let (prefix, body, right) = (
            self.sanitize(prefix),
            self.sanitize(body),
            self.sanitize(right),
        );
        let indent = text_columns(&prefix);
        let right_len = text_columns(&right);
        let body_width = width.saturating_sub(indent + 1 + right_len);
        if body_width < MIN_LEFT_WIDTH {
            // Too narrow for both: the left part wraps on its own and the
            // right part gets a line of its own, still flush right.
            for piece in wrap(&format!("{prefix}{body}"), width) {
                self.push_text(piece, bold, size);
            }
            self.push_text(pad_left(&right, width), bold, size);
            return;
        }
        for (i, piece) in wrap(&body, body_width).into_iter().enumerate() {
            let line = if i == 0 {
                let gap = width.saturating_sub(indent + text_columns(&piece) + right_len);
                format!("{prefix}{piece}{}{right}", " ".repeat(gap))
            } else {
                format!("{}{piece}", " ".repeat(indent))
            };
            self.push_text(line, bold, size);
        }
    }

    /// Adds `prefix` + `body` at normal size, `body` word-wrapped with
    /// its continuation lines indented by the prefix's width:
    /// `2 x Burger with a very` / `    long name`. A prefix too wide for
    /// that wraps together with the body.
    pub(crate) fn hanging(&mut self, prefix: &str, body: &str, bold: bool) {
        let width = self.width(Size::Normal);
        let (prefix, body) = (self.sanitize(prefix), self.sanitize(body));
        let indent = text_columns(&prefix);
        if indent + MIN_LEFT_WIDTH > width {
            for piece in wrap(&format!("{prefix}{body}"), width) {
                self.push_text(piece, bold, Size::Normal);
            }
            return;
        }
        for (i, piece) in wrap(&body, width - indent).into_iter().enumerate() {
            let lead = if i == 0 {
                prefix.clone()
            } else {
                " ".repeat(indent)
            };
            self.push_text(format!("{lead}{piece}"), bold, Size::Normal);
        }
    }

    /// Adds a code, a cut, a drawer kick or a beep.
    pub(crate) fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    fn push_text(&mut self, text: String, bold: bool, size: Size) {
        self.lines.push(Line::Text {
            text,
            style: Style::of(Align::Left, bold, size),
        });
    }

    /// Makes `s` printable: control characters become `?` (an `ESC` inside
    /// an item name must not become a command), tabs become spaces up to
    /// the next tab stop, carriage returns go. Characters no code page of
    /// the printer has stay when there are fonts to draw them with
    /// ([`Layout::to_bytes`]), else become `?`.
    fn sanitize(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut column = 0;
        for c in s.chars() {
            match c {
                '\r' => continue,
                '\t' => {
                    let spaces = TAB_STOP - column % TAB_STOP;
                    out.extend(std::iter::repeat_n(' ', spaces));
                    column += spaces;
                    continue;
                }
                c if c.is_control() => out.push('?'),
                c if self.fonts.is_some() || self.charset.can_print(c) => out.push(c),
                _ => out.push('?'),
            }
            column += columns_of(c);
        }
        out
    }

    /// The ESC/POS bytes: `ESC @`, `ESC t n` (the start code page) and for
    /// Shift_JIS printers `FS C 1` first, then every line in order. Text
    /// goes out as [`Charset::encode_line`] makes it; a line with a
    /// character no code page has is drawn with the fonts and sent as an
    /// image ([`Fonts::draw_line`]), or written with `?` without fonts.
    ///
    /// # Errors
    /// An escpos error, e.g. barcode data its symbology refuses or a QR
    /// code over 7089 bytes.
    pub(crate) fn to_bytes(&self) -> EscposResult<Vec<u8>> {
        let columns = u8::try_from(self.columns).unwrap_or(u8::MAX);
        capture(None, columns, |p| {
            p.init()?;
            p.custom(&self.charset.start_bytes())?;
            let mut cursor = self.charset.cursor();
            // ESC @ resets the printer to these; only changes are sent.
            let mut style = Style::PLAIN;
            for line in &self.lines {
                match line {
                    Line::Text { text, style: want } => {
                        if let Some(bitmap) = self.drawn(text, *want) {
                            style.set(p, Style::of(want.align, false, Size::Normal))?;
                            p.custom(&self.image_bytes(&bitmap))?;
                        } else {
                            style.set(p, *want)?;
                            p.custom(&self.charset.encode_line(text, &mut cursor))?;
                            p.feed()?;
                        }
                    }
                    Line::Qr(data) => {
                        style.set(p, Style::CODE)?;
                        let module = if self.columns < 48 { 5 } else { 6 };
                        if self.native_qr {
                            // Model 2 is what current printers read; Model 1
                            // (the escpos default) is legacy.
                            let option = QRCodeOption::new(
                                QRCodeModel::Model2,
                                module,
                                QRCodeCorrectionLevel::M,
                            );
                            p.qrcode_option(data, option)?;
                        } else {
                            match qr_bitmap(data, module, self.dots) {
                                Ok(bitmap) => p.custom(&self.image_bytes(&bitmap))?,
                                // Too long for any QR version: the data
                                // itself, for a person to read.
                                Err(e) => {
                                    tracing::warn!(error = %e, bytes = data.len(), "QR code cannot be drawn; printing its data as text");
                                    p.custom(&self.charset.encode_line(data, &mut cursor))?
                                        .feed()?
                                }
                            };
                        }
                    }
                    Line::Barcode { format, data } => {
                        style.set(p, Style::CODE)?;
                        match format {
                            BarcodeFormat::Ean13 => p.ean13(data)?,
                            BarcodeFormat::Ean8 => p.ean8(data)?,
                            BarcodeFormat::Upca => p.upca(data)?,
                            BarcodeFormat::Code39 => p.code39(data)?,
                            BarcodeFormat::Itf => p.itf(data)?,
                            BarcodeFormat::Codabar => p.codabar(data)?,
                        };
                    }
                    Line::Cut => {
                        match self.cutter {
                            Cutter::Full => p.cut()?,
                            // escpos 0.20's `partial_cut` sends `GS V A 1`,
                            // which is a full cut after a 1-unit feed.
                            Cutter::Partial => p.custom(&GS_V_PARTIAL)?,
                            Cutter::None => p.feeds(TEAR_OFF_FEED)?,
                        };
                    }
                    Line::DrawerKick => {
                        p.cash_drawer(CashDrawer::Pin2)?
                            .custom(&DRAWER_PULSE_TIMES)?;
                    }
                    Line::Beep => {
                        p.custom(&BEEP)?;
                    }
                    Line::Image {
                        bitmap,
                        align,
                        mode,
                    } => {
                        style.set(p, Style::of(*align, false, Size::Normal))?;
                        p.custom(&image_bytes(bitmap, *mode))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// `text` drawn as an image, when no code page of the printer has all
    /// of it and there are fonts.
    fn drawn(&self, text: &str, style: Style) -> Option<Bitmap> {
        if self.charset.can_print_all(text) {
            return None;
        }
        let (width, height) = match style.size {
            Size::Normal => (1, 1),
            Size::Tall => (1, 2),
            Size::Large => (2, 2),
            Size::Scaled { width, height } => (width, height),
        };
        let look = Look {
            bold: style.bold,
            underline: style.underline,
            invert: style.invert,
            width,
            height,
        };
        self.fonts
            .as_ref()?
            .draw_line(text, self.width(style.size), u32::from(self.dots), look)
    }

    fn image_bytes(&self, bitmap: &Bitmap) -> Vec<u8> {
        image_bytes(bitmap, self.image_mode)
    }

    /// The plain-text picture of the ticket: one line per printed line,
    /// none longer than the width, codes and paper handling as markers
    /// (`[QR: ...]`, `[BARCODE ean13: ...]`, `--- cut ---`,
    /// `[drawer kick]`).
    pub(crate) fn to_preview(&self) -> String {
        let mut out: Vec<String> = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            match line {
                Line::Text { text, style } => match style.align {
                    Align::Left => out.push(text.clone()),
                    Align::Center => out.push(center(text, self.columns)),
                    Align::Right => out.push(pad_left(text, self.columns)),
                },
                Line::Qr(data) => self.marker(&mut out, &format!("[QR: {data}]")),
                Line::Barcode { format, data } => {
                    self.marker(
                        &mut out,
                        &format!("[BARCODE {}: {data}]", barcode_name(*format)),
                    );
                }
                Line::Cut => out.push("--- cut ---".to_owned()),
                Line::DrawerKick => out.push("[drawer kick]".to_owned()),
                Line::Beep => out.push("[beep]".to_owned()),
                Line::Image { bitmap, align, .. } => {
                    let text = format!("[IMAGE {}x{}]", bitmap.width(), bitmap.height());
                    out.push(match align {
                        Align::Left => text,
                        Align::Center => center(&text, self.columns),
                        Align::Right => pad_left(&text, self.columns),
                    });
                }
            }
        }
        let mut preview = String::new();
        for line in out {
            preview.push_str(line.trim_end());
            preview.push('\n');
        }
        preview
    }

    /// A centered marker, cut into pieces when it is wider than the paper.
    fn marker(&self, out: &mut Vec<String>, text: &str) {
        let printable: String = text
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        for piece in hard_wrap(&printable, self.columns) {
            out.push(center(&piece, self.columns));
        }
    }
}

/// Lines fed instead of a cut on a printer without a cutter (`ESC d 4`,
/// about 17 mm at the default line spacing): the last line clears the
/// tear bar.
const TEAR_OFF_FEED: u8 = 4;

/// `GS V B 0`: feed to the cutting position and cut partially (function B,
/// m = 66, n = 0; Epson ESC/POS reference, `GS V`).
const GS_V_PARTIAL: [u8; 4] = [0x1d, b'V', 66, 0];

/// A QR code (Model 2, error correction M, as the printers' own `GS ( k`
/// draws it) as a bitmap: `module` dots a module, fewer when that would be
/// wider than `dots`, with the 4-module quiet zone of ISO/IEC 18004.
///
/// # Errors
/// Why not, for the log: `data` is too long for any QR version (over about
/// 2,300 bytes at level M), or the code is wider than `dots` even at one
/// dot a module.
pub(crate) fn qr_bitmap(data: &str, module: u8, dots: u16) -> Result<Bitmap, String> {
    const QUIET: usize = 4;
    let code = qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::M)
        .map_err(|e| e.to_string())?;
    let modules = code.width();
    let side = modules + 2 * QUIET;
    let scale = usize::from(module).min(usize::from(dots) / side);
    if scale == 0 {
        return Err(format!(
            "{side} modules with the quiet zone do not fit {dots} dots"
        ));
    }
    let colors = code.to_colors();
    let px = u32::try_from(side * scale).unwrap_or(u32::MAX);
    let img = image::GrayImage::from_fn(px, px, |x, y| {
        let (mx, my) = (x as usize / scale, y as usize / scale);
        let dark = (QUIET..QUIET + modules).contains(&mx)
            && (QUIET..QUIET + modules).contains(&my)
            && colors[(my - QUIET) * modules + (mx - QUIET)] == qrcode::Color::Dark;
        image::Luma([if dark { 0 } else { 255 }])
    });
    Ok(Bitmap::from_bilevel(&img))
}

fn image_bytes(bitmap: &Bitmap, mode: ImageMode) -> Vec<u8> {
    match mode {
        ImageMode::BitImage => bitmap.bit_image_bands(),
        ImageMode::Graphics => bitmap.graphics_bands(),
        ImageMode::Raster => bitmap.raster_bands(),
    }
}

/// The printer's state only changes when a line needs another value.
impl Style {
    fn set(&mut self, p: &mut Printer<Capture>, want: Style) -> EscposResult<()> {
        if want.align != self.align {
            p.justify(match want.align {
                Align::Left => JustifyMode::LEFT,
                Align::Center => JustifyMode::CENTER,
                Align::Right => JustifyMode::RIGHT,
            })?;
        }
        if want.bold != self.bold {
            p.bold(want.bold)?;
        }
        if want.underline != self.underline {
            p.underline(if want.underline {
                UnderlineMode::Single
            } else {
                UnderlineMode::None
            })?;
        }
        if want.invert != self.invert {
            p.reverse(want.invert)?;
        }
        if want.size != self.size {
            match want.size {
                Size::Normal => p.reset_size()?,
                Size::Tall => p.size(1, 2)?,
                Size::Large => p.size(2, 2)?,
                Size::Scaled { width, height } => p.size(width, height)?,
            };
        }
        *self = want;
        Ok(())
    }
}

/// The symbology as spelled on the wire (`ean13`, `code39`, ...).
fn barcode_name(format: BarcodeFormat) -> &'static str {
    match format {
        BarcodeFormat::Ean13 => "ean13",
        BarcodeFormat::Ean8 => "ean8",
        BarcodeFormat::Upca => "upca",
        BarcodeFormat::Code39 => "code39",
        BarcodeFormat::Itf => "itf",
        BarcodeFormat::Codabar => "codabar",
    }
}

fn center(text: &str, width: usize) -> String {
    let pad = width.saturating_sub(text_columns(text)) / 2;
    format!("{}{text}", " ".repeat(pad))
}

fn pad_left(text: &str, width: usize) -> String {
    let pad = width.saturating_sub(text_columns(text));
    format!("{}{text}", " ".repeat(pad))
}

/// Word-wraps one line to `width` columns (a CJK character takes two, see
/// [`columns_of`]): breaks at the last space that fits, cuts words longer
/// than a line, keeps spacing inside each piece. An empty line stays one
/// empty line.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let chars: Vec<char> = text.trim_end().chars().collect();
    let mut rest = chars.as_slice();
    let mut pieces = Vec::new();
    loop {
        // How many characters fit; at least one, so a character wider than
        // the line still goes.
        let mut used = 0;
        let fit = rest
            .iter()
            .position(|&c| {
                used += columns_of(c);
                used > width
            })
            .unwrap_or(rest.len());
        if fit == rest.len() {
            break;
        }
        let fit = fit.max(1);
        if fit >= rest.len() {
            break;
        }
        let cut = rest[..=fit]
            .iter()
            .rposition(|&c| c == ' ')
            .filter(|&i| i > 0)
            .unwrap_or(fit);
        let piece: String = rest[..cut].iter().collect();
        pieces.push(piece.trim_end().to_owned());
        rest = &rest[cut..];
        while let [' ', tail @ ..] = rest {
            rest = tail;
        }
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.iter().collect());
    }
    pieces
}

/// Cuts `text` into pieces of exactly `width` characters (the last may be
/// shorter), for markers whose content must not be reflowed.
pub(crate) fn hard_wrap(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::options::{CodePage, PageCode};
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("hello world", 20), ["hello world"]);
        assert_eq!(wrap("hello world", 8), ["hello", "world"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(wrap("a  b   c", 4), ["a  b", "c"]);
    }

    #[test]
    fn sanitize_replaces_controls_and_unencodable_characters() {
        let layout =
            Layout::new(&RenderOptions::new(32, CodePage::PC437).with_only_page(PageCode::PC437));
        assert_eq!(
            layout.sanitize("Caf\u{e9}\u{1b}@ \u{6f22}\r"),
            "Caf\u{e9}?@ ?"
        );
        assert_eq!(layout.sanitize("a\tb"), "a       b");
        // The euro sign is in PC858 but not in PC437.
        assert_eq!(layout.sanitize("5\u{20ac}"), "5?");
        let layout =
            Layout::new(&RenderOptions::new(32, CodePage::PC437).with_only_page(PageCode::PC858));
        assert_eq!(layout.sanitize("5\u{20ac}"), "5\u{20ac}");
    }

    #[test]
    fn columns_puts_the_right_part_flush_right_and_indents_wraps() {
        let mut layout =
            Layout::new(&RenderOptions::new(20, CodePage::PC437).with_only_page(PageCode::PC437));
        layout.columns(
            "2 x ",
            "Very long burger name",
            "17.00",
            false,
            Size::Normal,
        );
        assert_eq!(
            layout.to_preview(),
            "2 x Very long  17.00\n    burger\n    name\n"
        );
    }
}

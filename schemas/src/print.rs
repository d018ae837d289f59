//! Print jobs (`kiosk/<id>/print`) and their results (`kiosk/<id>/print/result`).

use base64::Engine as _;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Currency, JobId, Timestamp, V1};

/// Most copies one job may ask for.
pub const MAX_COPIES: u8 = 10;

/// One print job, published QoS 1 on `kiosk/<id>/print`.
///
/// ```json
/// {"v":1,"job_id":"01J9...","printer":"receipt","copies":1,
///  "created_at":"2026-11-21T10:00:00Z","expires_at":"2026-11-22T10:00:00Z",
///  "document":{"kind":"text","text":"Hello\n"}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrintJob {
    /// Wire version, always 1.
    pub v: V1,
    /// Unique id; a kiosk prints each id at most once.
    pub job_id: JobId,
    /// Logical printer name on the kiosk (`receipt`, `kitchen`, ...),
    /// `[a-z0-9_-]{1,32}`.
    pub printer: String,
    /// What to print.
    pub document: Document,
    /// How many copies, 1 to 10; default 1.
    #[serde(default = "one")]
    pub copies: u8,
    /// When the job was created; defaults to the time it is decoded.
    #[serde(default = "Utc::now")]
    #[schemars(transform = no_default)]
    pub created_at: Timestamp,
    /// After this instant the job is not printed any more but reported
    /// `expired`. No expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// The default of `created_at` is "now", which has no fixed schema value.
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

fn one() -> u8 {
    1
}

fn yes() -> bool {
    true
}

impl PrintJob {
    /// Checks what the types alone cannot: printer name, copies and the
    /// document's content.
    ///
    /// # Errors
    /// A human-readable reason naming the offending field, e.g.
    /// `"copies must be between 1 and 10, got 0"`.
    pub fn validate(&self) -> Result<(), String> {
        validate_printer_name(&self.printer)?;
        if self.copies == 0 || self.copies > MAX_COPIES {
            return Err(format!(
                "copies must be between 1 and {MAX_COPIES}, got {}",
                self.copies
            ));
        }
        self.document.validate()
    }

    /// True when `expires_at` is set and lies at or before `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// Checks a logical printer name: `[a-z0-9_-]{1,32}`.
///
/// # Errors
/// A reason naming the field `printer`.
pub fn validate_printer_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "printer must be 1 to 32 characters of a-z, 0-9, '_' and '-', got {name:?}"
        ))
    }
}

/// The content of a job, tagged by `kind`: `text`, `raw`, `receipt` or
/// `ticket`.
/// Any other `kind` is rejected with a reason naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Document {
    /// Plain text, printed line by line in the printer's code page.
    Text(TextDocument),
    /// Ready-made ESC/POS bytes, passed through untouched.
    Raw(RawDocument),
    /// A structured receipt the kiosk lays out for its printer's width.
    Receipt(Receipt),
    /// A kitchen ticket: styled lines, separators and items with modifiers
    /// and notes, laid out for the printer's width; may sound its buzzer.
    Ticket(Ticket),
}

impl Document {
    /// The `kind` tag as written on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Text(_) => "text",
            Document::Raw(_) => "raw",
            Document::Receipt(_) => "receipt",
            Document::Ticket(_) => "ticket",
        }
    }

    /// Checks content rules (valid base64, sane receipt, ticket limits).
    ///
    /// # Errors
    /// A reason naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Document::Text(_) => Ok(()),
            Document::Raw(raw) => raw.decode().map(drop),
            Document::Receipt(r) => r.validate(),
            Document::Ticket(t) => t.validate(),
        }
    }
}

/// `{"kind":"text","text":"...","cut":true}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TextDocument {
    /// The text; `\n` separates lines.
    pub text: String,
    /// Cut the paper after the text; default true.
    #[serde(default = "yes")]
    pub cut: bool,
}

/// `{"kind":"raw","data":"<base64>"}`: ESC/POS bytes, standard base64
/// (RFC 4648, with padding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RawDocument {
    /// The bytes, base64-encoded.
    pub data: String,
}

impl RawDocument {
    /// Wraps `bytes` as a raw document.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        RawDocument {
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Decodes the bytes.
    ///
    /// # Errors
    /// A reason naming `document.data` when it is not valid base64.
    pub fn decode(&self) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(self.data.as_bytes())
            .map_err(|e| format!("document.data is not valid base64: {e}"))
    }
}

/// A structured receipt. Amounts are integers in minor units of `currency`
/// (cents for EUR: `1250` is 12.50 EUR).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// Print the printer's configured logo (`printers.<name>.logo` in the
    /// agent's config) centered at the very top; default false. Ignored by
    /// a printer without a logo.
    #[serde(default)]
    pub logo: bool,
    /// Lines printed centered at the top (shop name, address, ...): text,
    /// or `{"image": {...}}` (see [`ReceiptImage`]). The first text line is
    /// printed large and bold.
    #[serde(default, deserialize_with = "header_lines")]
    pub header: Vec<ReceiptLine>,
    /// The item lines.
    pub items: Vec<ReceiptItem>,
    /// Sum before tax, in minor units; printed when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtotal: Option<i64>,
    /// Tax, in minor units; printed when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<i64>,
    /// Amount due, in minor units.
    pub total: i64,
    /// ISO 4217 code of every amount on the receipt.
    pub currency: Currency,
    /// Lines printed centered at the bottom: text or `{"image": {...}}`.
    #[serde(default, deserialize_with = "footer_lines")]
    pub footer: Vec<ReceiptLine>,
    /// Text encoded as a QR code below the footer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    /// A 1-D barcode below the footer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barcode: Option<Barcode>,
    /// Cut the paper at the end; default true.
    #[serde(default = "yes")]
    pub cut: bool,
    /// Pulse the cash drawer kick connector (ESC p) at the end; default false.
    #[serde(default)]
    pub open_drawer: bool,
}

impl Receipt {
    fn validate(&self) -> Result<(), String> {
        if let Some(i) = self.items.iter().position(|i| i.name.trim().is_empty()) {
            return Err(format!("document.items[{i}].name must not be empty"));
        }
        if let Some(b) = &self.barcode {
            b.validate()?;
        }
        for (field, lines) in [("header", &self.header), ("footer", &self.footer)] {
            for (i, line) in lines.iter().enumerate() {
                if let ReceiptLine::Image { image } = line {
                    image.validate(&format!("document.{field}[{i}].image"))?;
                }
            }
        }
        Ok(())
    }
}

/// Most bytes of one image, after base64 decoding.
pub const MAX_IMAGE_BYTES: usize = 256 * 1024;

/// Largest width and height of an image, in pixels, before scaling.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// Narrowest image `width` in dots.
pub const MIN_IMAGE_DOTS: u16 = 8;

/// One entry of a receipt's `header` or `footer`: a text line (`"Thanks!"`)
/// or an image (`{"image": {"data": "<base64 PNG>", "align": "center"}}`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ReceiptLine {
    /// A line of text, centered.
    Text(String),
    /// An image.
    Image {
        /// The image.
        image: ReceiptImage,
    },
}

impl From<&str> for ReceiptLine {
    fn from(text: &str) -> Self {
        ReceiptLine::Text(text.to_owned())
    }
}

/// Decodes `header`/`footer` entries one by one so an error names the
/// entry and the field in it (`header[1].image.width: ...`).
fn header_lines<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ReceiptLine>, D::Error> {
    receipt_lines(d, "header")
}

fn footer_lines<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ReceiptLine>, D::Error> {
    receipt_lines(d, "footer")
}

fn receipt_lines<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
) -> Result<Vec<ReceiptLine>, D::Error> {
    use serde::de::Error as _;
    #[derive(Deserialize)]
    struct I {
        image: ReceiptImage,
    }
    let values = Vec::<serde_json::Value>::deserialize(d)?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::String(text) => Ok(ReceiptLine::Text(text)),
            serde_json::Value::Object(ref map) if map.contains_key("image") => {
                serde_path_to_error::deserialize::<_, I>(v)
                    .map(|x| ReceiptLine::Image { image: x.image })
                    .map_err(|e| {
                        let path = e.path().to_string();
                        D::Error::custom(format!("{field}[{i}].{path}: {}", e.into_inner()))
                    })
            }
            _ => Err(D::Error::custom(format!(
                "{field}[{i}]: a receipt line is a string or {{\"image\": {{...}}}}"
            ))),
        })
        .collect()
}

/// An image in a receipt, scaled to `width` (never wider than the
/// printer), dithered to black and white and printed as a raster image.
///
/// ```json
/// {"image": {"data": "<base64 PNG or JPEG>", "align": "center", "width": "full"}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptImage {
    /// A PNG or JPEG, standard base64 (RFC 4648, with padding); at most
    /// 256 KiB decoded and 4096 × 4096 pixels.
    pub data: String,
    /// `left`, `center` (default) or `right` (`ESC a`).
    #[serde(default = "center")]
    pub align: TicketAlign,
    /// `"full"` (default): the printer's width in dots; or a width in dots,
    /// at least 8, capped at the printer's width. The height follows the
    /// aspect ratio.
    #[serde(default)]
    pub width: ImageWidth,
}

fn center() -> TicketAlign {
    TicketAlign::Center
}

impl ReceiptImage {
    /// Decodes `data`: base64, then checks it is a PNG or JPEG within the
    /// limits, without decoding the pixels.
    ///
    /// # Errors
    /// A reason naming `<at>.data` (or `<at>.width`).
    pub fn validate(&self, at: &str) -> Result<Vec<u8>, String> {
        if let ImageWidth::Dots(n) = self.width
            && n < MIN_IMAGE_DOTS
        {
            return Err(format!(
                "{at}.width must be \"full\" or at least {MIN_IMAGE_DOTS} dots, got {n}"
            ));
        }
        // Base64 is 4 characters for 3 bytes: refuse before decoding.
        if self.data.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
            return Err(format!(
                "{at}.data must be at most {MAX_IMAGE_BYTES} bytes decoded"
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.data.as_bytes())
            .map_err(|e| format!("{at}.data is not valid base64: {e}"))?;
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(format!(
                "{at}.data must be at most {MAX_IMAGE_BYTES} bytes decoded, got {}",
                bytes.len()
            ));
        }
        let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| format!("{at}.data cannot be read: {e}"))?;
        match reader.format() {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
            _ => return Err(format!("{at}.data is not a PNG or JPEG image")),
        }
        let (w, h) = reader
            .into_dimensions()
            .map_err(|e| format!("{at}.data is not a valid PNG or JPEG image: {e}"))?;
        if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
            return Err(format!(
                "{at}.data must be 1 to {MAX_IMAGE_SIDE} pixels wide and high, got {w}x{h}"
            ));
        }
        Ok(bytes)
    }
}

/// How wide an image prints: `"full"` or a number of dots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WidthRepr", into = "WidthRepr")]
pub enum ImageWidth {
    /// The printer's whole width (`printers.<name>.dots`).
    #[default]
    Full,
    /// This many dots, capped at the printer's width.
    Dots(u16),
}

/// The wire form of [`ImageWidth`].
#[derive(Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum WidthRepr {
    /// `"full"`.
    Name(FullWidth),
    /// Dots.
    Dots(u16),
}

/// The one width name.
#[derive(Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum FullWidth {
    /// The printer's whole width.
    Full,
}

impl From<WidthRepr> for ImageWidth {
    fn from(w: WidthRepr) -> Self {
        match w {
            WidthRepr::Name(FullWidth::Full) => ImageWidth::Full,
            WidthRepr::Dots(n) => ImageWidth::Dots(n),
        }
    }
}

impl From<ImageWidth> for WidthRepr {
    fn from(w: ImageWidth) -> Self {
        match w {
            ImageWidth::Full => WidthRepr::Name(FullWidth::Full),
            ImageWidth::Dots(n) => WidthRepr::Dots(n),
        }
    }
}

impl JsonSchema for ImageWidth {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ImageWidth".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        WidthRepr::json_schema(generator)
    }
}

/// One item line: `2 x Burger ........ 17.00`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptItem {
    /// How many.
    pub quantity: u32,
    /// What.
    pub name: String,
    /// Line total (quantity × unit price), in minor units.
    pub amount: i64,
}

/// A 1-D barcode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Barcode {
    /// Symbology.
    pub format: BarcodeFormat,
    /// Content; digits only for the EAN/UPC/ITF symbologies.
    pub data: String,
}

impl Barcode {
    fn validate(&self) -> Result<(), String> {
        let digits = self.data.bytes().all(|b| b.is_ascii_digit());
        let ok = match self.format {
            BarcodeFormat::Ean13 => digits && (12..=13).contains(&self.data.len()),
            BarcodeFormat::Ean8 => digits && (7..=8).contains(&self.data.len()),
            BarcodeFormat::Upca => digits && (11..=12).contains(&self.data.len()),
            BarcodeFormat::Itf => {
                digits && !self.data.is_empty() && self.data.len().is_multiple_of(2)
            }
            BarcodeFormat::Code39 | BarcodeFormat::Codabar => {
                !self.data.is_empty() && self.data.is_ascii()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "document.barcode.data {:?} is not valid for {:?}",
                self.data, self.format
            ))
        }
    }
}

/// Barcode symbologies the ESC/POS `GS k` command offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BarcodeFormat {
    /// EAN-13: 12 or 13 digits.
    Ean13,
    /// EAN-8: 7 or 8 digits.
    Ean8,
    /// UPC-A: 11 or 12 digits.
    Upca,
    /// Code 39.
    Code39,
    /// Interleaved 2 of 5: an even count of digits.
    Itf,
    /// Codabar (NW-7).
    Codabar,
}

/// Most lines one kitchen ticket may have.
pub const MAX_TICKET_LINES: usize = 200;

/// Most characters in one ticket text, item name, modifier or note.
pub const MAX_TICKET_TEXT: usize = 500;

/// Most modifiers on one ticket item.
pub const MAX_TICKET_MODIFIERS: usize = 20;

/// A kitchen ticket: styled lines, separators and item lines, laid out by
/// the kiosk for its printer's width.
///
/// ```json
/// {"kind":"ticket","beep":true,"lines":[
///   {"text":"TABLE 12","size":[2,2],"bold":true,"align":"center"},
///   {"separator":true},
///   {"item":{"quantity":2,"name":"Burger","modifiers":["no onions","extra cheese"],"note":"well done"}},
///   {"text":"Allergy: nuts","invert":true}]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Ticket {
    /// The lines, top to bottom: 1 to 200.
    #[serde(deserialize_with = "ticket_lines")]
    pub lines: Vec<TicketLine>,
    /// Sound the printer's buzzer (ESC/POS `ESC B n t`) when the ticket
    /// starts printing; default false. Printers without a buzzer ignore it.
    #[serde(default)]
    pub beep: bool,
    /// Cut the paper at the end; default true.
    #[serde(default = "yes")]
    pub cut: bool,
}

/// Decodes `lines` one by one so an error names the line (`lines[3]: ...`):
/// inside an internally tagged [`Document`] serde loses the path.
fn ticket_lines<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TicketLine>, D::Error> {
    use serde::de::Error as _;
    let values = Vec::<serde_json::Value>::deserialize(d)?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            TicketLine::deserialize(v).map_err(|e| D::Error::custom(format!("lines[{i}]: {e}")))
        })
        .collect()
}

impl Ticket {
    fn validate(&self) -> Result<(), String> {
        if self.lines.is_empty() || self.lines.len() > MAX_TICKET_LINES {
            return Err(format!(
                "document.lines must have 1 to {MAX_TICKET_LINES} lines, got {}",
                self.lines.len()
            ));
        }
        for (i, line) in self.lines.iter().enumerate() {
            line.validate(&format!("document.lines[{i}]"))?;
        }
        Ok(())
    }
}

/// One line of a [`Ticket`]: exactly one of `text` (with its style),
/// `separator` or `item`. Decoding names what is missing or too much:
/// `{"text":"x","item":{...}}` is refused.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TicketLine {
    /// `{"text":"TABLE 12","size":[2,2],"bold":true,"align":"center"}`
    Text(TicketText),
    /// `{"separator":true}`: a full-width line of dashes.
    Separator {
        /// Always true.
        separator: bool,
    },
    /// `{"item":{"quantity":2,"name":"Burger","modifiers":["no onions"],"note":"well done"}}`
    Item {
        /// The item.
        item: TicketItem,
    },
}

impl<'de> Deserialize<'de> for TicketLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let keys: Vec<&str> = ["text", "separator", "item"]
            .into_iter()
            .filter(|k| map.contains_key(*k))
            .collect();
        let value = serde_json::Value::Object(map);
        // The inner path (`size[1]`, `item.quantity`) goes into the message:
        // the outer path stops at this line.
        fn inner<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                format!("{path}: {}", e.into_inner())
            })
        }
        match keys.as_slice() {
            ["text"] => inner(value).map(TicketLine::Text),
            ["separator"] => {
                #[derive(Deserialize)]
                struct S {
                    separator: bool,
                }
                inner::<S>(value).map(|s| TicketLine::Separator {
                    separator: s.separator,
                })
            }
            ["item"] => {
                #[derive(Deserialize)]
                struct I {
                    item: TicketItem,
                }
                inner::<I>(value).map(|i| TicketLine::Item { item: i.item })
            }
            [] => Err("a ticket line needs one of `text`, `separator` or `item`".to_owned()),
            several => Err(format!(
                "a ticket line has exactly one of `text`, `separator` or `item`, got {}",
                several.join(" and ")
            )),
        }
        .map_err(D::Error::custom)
    }
}

impl TicketLine {
    fn validate(&self, at: &str) -> Result<(), String> {
        match self {
            TicketLine::Text(t) => {
                check_text(&format!("{at}.text"), &t.text)?;
                for (k, n) in [("width", t.size[0]), ("height", t.size[1])] {
                    if !(1..=8).contains(&n) {
                        return Err(format!("{at}.size {k} must be between 1 and 8, got {n}"));
                    }
                }
                Ok(())
            }
            TicketLine::Separator { separator } => {
                if *separator {
                    Ok(())
                } else {
                    Err(format!("{at}.separator must be true"))
                }
            }
            TicketLine::Item { item } => {
                if item.quantity == 0 {
                    return Err(format!("{at}.item.quantity must be at least 1"));
                }
                if item.name.trim().is_empty() {
                    return Err(format!("{at}.item.name must not be empty"));
                }
                check_text(&format!("{at}.item.name"), &item.name)?;
                if item.modifiers.len() > MAX_TICKET_MODIFIERS {
                    return Err(format!(
                        "{at}.item.modifiers must have at most {MAX_TICKET_MODIFIERS} entries, got {}",
                        item.modifiers.len()
                    ));
                }
                for (m, modifier) in item.modifiers.iter().enumerate() {
                    check_text(&format!("{at}.item.modifiers[{m}]"), modifier)?;
                }
                if let Some(note) = &item.note {
                    check_text(&format!("{at}.item.note"), note)?;
                }
                Ok(())
            }
        }
    }
}

fn check_text(field: &str, text: &str) -> Result<(), String> {
    let len = text.chars().count();
    if len > MAX_TICKET_TEXT {
        return Err(format!(
            "{field} must be at most {MAX_TICKET_TEXT} characters, got {len}"
        ));
    }
    Ok(())
}

/// A styled text line of a [`Ticket`]; wrapped at word boundaries to the
/// width left at its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TicketText {
    /// The text, at most 500 characters; `\n` starts a new line.
    pub text: String,
    /// Character size `[width, height]`, each 1 to 8 (ESC/POS `GS !`);
    /// default `[1, 1]`. Width 2 halves the characters per line.
    #[serde(default = "normal_size")]
    pub size: [u8; 2],
    /// Emphasized (`ESC E`); default false.
    #[serde(default)]
    pub bold: bool,
    /// Underlined, one dot (`ESC -`); default false.
    #[serde(default)]
    pub underline: bool,
    /// White on black (`GS B`); default false.
    #[serde(default)]
    pub invert: bool,
    /// `left` (default), `center` or `right` (`ESC a`).
    #[serde(default)]
    pub align: TicketAlign,
}

fn normal_size() -> [u8; 2] {
    [1, 1]
}

/// Horizontal position of a ticket text line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketAlign {
    /// Flush left.
    #[default]
    Left,
    /// Centered.
    Center,
    /// Flush right.
    Right,
}

/// An item on a kitchen ticket, printed `2 x Burger` in bold, each
/// modifier on its own line indented below it, the note marked `NOTE:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TicketItem {
    /// How many, at least 1.
    pub quantity: u32,
    /// What, not empty, at most 500 characters.
    pub name: String,
    /// Changes to the item (`no onions`), at most 20 of at most 500
    /// characters each; default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modifiers: Vec<String>,
    /// A free-text note for the cook, at most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// State of a job as the gateway reports it over HTTP.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Stored by the gateway, not yet confirmed by the kiosk.
    Queued,
    /// Stored durably by the kiosk; it will print it or report why not.
    Received,
    /// Every byte handed over to the printer (see [`JobResult`]).
    Printed,
    /// Not printed, or printed only in part; `reason` says why
    /// (`interrupted`, printer error, bad document, ...). Never retried by
    /// itself: reprint explicitly.
    Failed,
    /// `expires_at` passed before the job could print.
    Expired,
    /// Cancelled through the API before it printed: at once while the
    /// kiosk had not received it, or confirmed by the kiosk, which records
    /// the cancel durably and never prints the job.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Received,
        JobState::Printed,
        JobState::Failed,
        JobState::Expired,
        JobState::Cancelled,
    ];

    /// True for `printed`, `failed`, `expired` and `cancelled`: nothing
    /// changes after (except what the kiosk reports about a state the
    /// gateway set by itself).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Printed | JobState::Failed | JobState::Expired | JobState::Cancelled
        )
    }

    /// The name used on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Received => "received",
            JobState::Printed => "printed",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// States a kiosk reports on `kiosk/<id>/print/result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultState {
    /// The job is in the kiosk's durable inbox.
    Received,
    /// Every byte of the job was handed over to the printer.
    Printed,
    /// The job did not print, or printed only in part; see `reason`, and
    /// `bytes_written` of `bytes_total` when its write had started.
    Failed,
    /// The job expired on the kiosk before it could print.
    Expired,
    /// The kiosk recorded a `cancel` command for the job before its write
    /// started (or before the job arrived): it never prints it.
    Cancelled,
}

impl From<ResultState> for JobState {
    fn from(s: ResultState) -> JobState {
        match s {
            ResultState::Received => JobState::Received,
            ResultState::Printed => JobState::Printed,
            ResultState::Failed => JobState::Failed,
            ResultState::Expired => JobState::Expired,
            ResultState::Cancelled => JobState::Cancelled,
        }
    }
}

/// A kiosk's report on one job, published QoS 1 on
/// `kiosk/<id>/print/result`.
///
/// `printed` means every byte was handed over to the printer (`tcp`:
/// written and the write side shut down; `device`: written and `fsync`
/// returned). A job whose write started but did not complete is `failed`
/// with `bytes_written` and `bytes_total`: `reason` `interrupted` when the
/// agent stopped during the write, the printer's error otherwise.
///
/// ```json
/// {"v":1,"job_id":"01J9...","state":"failed","at":"2026-11-21T10:00:01Z","reason":"interrupted",
///  "bytes_written":65536,"bytes_total":3800000}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobResult {
    /// Wire version, always 1.
    pub v: V1,
    /// The job this is about.
    pub job_id: JobId,
    /// The job's state on the kiosk.
    pub state: ResultState,
    /// When the kiosk reached that state.
    pub at: Timestamp,
    /// Why, for `failed`, `expired` and `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a `failed` job whose write started: bytes handed to the printer
    /// link before it stopped. After a crash (`interrupted`) a lower bound.
    /// `0`: nothing was written, the ticket never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// For a `failed` job whose write started: bytes of the whole job (all
    /// copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

impl JobResult {
    /// A result stamped now, without byte counts.
    pub fn now(job_id: JobId, state: ResultState, reason: Option<String>) -> Self {
        JobResult {
            v: V1,
            job_id,
            state,
            at: Utc::now(),
            reason,
            bytes_written: None,
            bytes_total: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(doc: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"v":1,"job_id":"j-1","printer":"receipt","document":doc})
    }

    #[test]
    fn defaults_apply() {
        let j: PrintJob =
            serde_json::from_value(job(serde_json::json!({"kind":"text","text":"hi"}))).unwrap();
        assert_eq!(j.copies, 1);
        assert!(j.expires_at.is_none());
        assert!(matches!(
            j.document,
            Document::Text(TextDocument { cut: true, .. })
        ));
        j.validate().unwrap();
    }

    #[test]
    fn unknown_kind_is_named() {
        let err = serde_json::from_value::<PrintJob>(job(serde_json::json!({"kind":"pdf"})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pdf"), "{err}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = job(serde_json::json!({"kind":"raw","data":"G0A=","extra":1}));
        v["future_field"] = serde_json::json!(true);
        let j: PrintJob = serde_json::from_value(v).unwrap();
        match &j.document {
            Document::Raw(r) => assert_eq!(r.decode().unwrap(), vec![0x1b, 0x40]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_names_fields() {
        let mut j: PrintJob =
            serde_json::from_value(job(serde_json::json!({"kind":"raw","data":"***"}))).unwrap();
        assert!(j.validate().unwrap_err().contains("document.data"));
        j.document = Document::Text(TextDocument {
            text: "x".into(),
            cut: false,
        });
        j.copies = 0;
        assert!(j.validate().unwrap_err().contains("copies"));
        j.copies = 1;
        j.printer = "Bad Name".into();
        assert!(j.validate().unwrap_err().contains("printer"));
    }

    fn ticket(lines: serde_json::Value) -> Result<PrintJob, String> {
        let j: PrintJob = crate::wire::decode(
            &serde_json::to_vec(&job(serde_json::json!({"kind":"ticket","lines":lines}))).unwrap(),
            1 << 20,
        )
        .map_err(|e| e.to_string())?;
        j.validate().map(|()| j)
    }

    #[test]
    fn ticket_decodes_the_issue_example() {
        let doc = serde_json::json!({"kind":"ticket","beep":true,"lines":[
            {"text":"TABLE 12","size":[2,2],"bold":true,"align":"center"},
            {"separator":true},
            {"item":{"quantity":2,"name":"Burger","modifiers":["no onions","extra cheese"],"note":"well done"}},
            {"text":"Allergy: nuts","invert":true}]});
        let j: PrintJob = serde_json::from_value(job(doc.clone())).unwrap();
        j.validate().unwrap();
        let Document::Ticket(t) = &j.document else {
            panic!("{:?}", j.document)
        };
        assert!(t.beep && t.cut);
        assert_eq!(t.lines.len(), 4);
        assert!(matches!(&t.lines[0], TicketLine::Text(x)
            if x.size == [2, 2] && x.bold && x.align == TicketAlign::Center && !x.invert));
        assert_eq!(t.lines[1], TicketLine::Separator { separator: true });
        let TicketLine::Item { item } = &t.lines[2] else {
            panic!()
        };
        assert_eq!(
            (item.quantity, item.modifiers.len(), item.note.as_deref()),
            (2, 2, Some("well done"))
        );
        assert!(matches!(&t.lines[3], TicketLine::Text(x) if x.invert && x.size == [1, 1]));
        // Round trip through the wire form.
        let again: PrintJob = serde_json::from_value(serde_json::to_value(&j).unwrap()).unwrap();
        assert_eq!(again, j);
        assert_eq!(j.document.kind(), "ticket");
    }

    #[test]
    fn ticket_errors_name_the_field() {
        let err = |lines| ticket(lines).unwrap_err();
        let e = err(serde_json::json!([{"text":"x","size":[9,1]}]));
        assert!(
            e.contains("document.lines[0].size width") && e.contains('9'),
            "{e}"
        );
        let e = err(serde_json::json!([{"text":"x"},{"text":"y","size":[1,0]}]));
        assert!(e.contains("document.lines[1].size height"), "{e}");
        let e = err(serde_json::json!([{"text":"x".repeat(501)}]));
        assert!(
            e.contains("document.lines[0].text must be at most 500"),
            "{e}"
        );
        let e = err(
            serde_json::json!([{"item":{"quantity":1,"name":"a","modifiers":["m".repeat(501)]}}]),
        );
        assert!(e.contains("document.lines[0].item.modifiers[0]"), "{e}");
        let e = err(serde_json::json!([{"item":{"quantity":0,"name":"a"}}]));
        assert!(e.contains("document.lines[0].item.quantity"), "{e}");
        let e = err(serde_json::json!([{"item":{"quantity":1,"name":" "}}]));
        assert!(e.contains("document.lines[0].item.name"), "{e}");
        let e = err(serde_json::json!([]));
        assert!(e.contains("document.lines must have 1 to 200"), "{e}");
        let many: Vec<_> = (0..201)
            .map(|_| serde_json::json!({"separator":true}))
            .collect();
        assert!(err(serde_json::Value::from(many)).contains("got 201"));
        let e = err(serde_json::json!([{"separator":false}]));
        assert!(
            e.contains("document.lines[0].separator must be true"),
            "{e}"
        );
        // Shape errors: the decoder names the line and what is wrong in it.
        let e = err(serde_json::json!([{"bold":true}]));
        assert!(
            e.contains("lines[0]: ") && e.contains("one of `text`"),
            "{e}"
        );
        let e = err(serde_json::json!([{"text":"a","item":{"quantity":1,"name":"b"}}]));
        assert!(e.contains("text and item"), "{e}");
        let e = err(serde_json::json!([{"item":{"quantity":"two","name":"b"}}]));
        assert!(
            e.contains("lines[0]: ") && e.contains("item.quantity"),
            "{e}"
        );
        let e = err(serde_json::json!([{"text":"a","align":"middle"}]));
        assert!(e.contains("align") && e.contains("middle"), "{e}");
    }

    /// A 2×1 PNG, built with the `image` crate.
    fn png_base64() -> String {
        let img = image::GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    fn receipt(header: serde_json::Value) -> Result<PrintJob, String> {
        let doc = serde_json::json!({"kind":"receipt","logo":true,"header":header,
            "items":[],"total":0,"currency":"EUR"});
        let j: PrintJob = crate::wire::decode(&serde_json::to_vec(&job(doc)).unwrap(), 1 << 20)
            .map_err(|e| e.to_string())?;
        j.validate().map(|()| j)
    }

    #[test]
    fn receipt_images_decode_with_defaults_and_round_trip() {
        let png = png_base64();
        let j = receipt(serde_json::json!(["Shop", {"image":{"data":png}},
            {"image":{"data":png,"align":"left","width":100}}]))
        .unwrap();
        let Document::Receipt(r) = &j.document else {
            panic!()
        };
        assert!(r.logo);
        assert_eq!(r.header[0], ReceiptLine::from("Shop"));
        let ReceiptLine::Image { image } = &r.header[1] else {
            panic!("{:?}", r.header[1])
        };
        assert_eq!(
            (image.align, image.width),
            (TicketAlign::Center, ImageWidth::Full)
        );
        assert!(matches!(&r.header[2], ReceiptLine::Image { image }
            if image.align == TicketAlign::Left && image.width == ImageWidth::Dots(100)));
        let value = serde_json::to_value(&j).unwrap();
        assert_eq!(value["document"]["header"][1]["image"]["width"], "full");
        assert_eq!(serde_json::from_value::<PrintJob>(value).unwrap(), j);
    }

    #[test]
    fn receipt_image_errors_name_the_field() {
        let e = receipt(serde_json::json!(["x", {"image":{"data":"***"}}])).unwrap_err();
        assert!(
            e.contains("document.header[1].image.data is not valid base64"),
            "{e}"
        );
        let not_image = base64::engine::general_purpose::STANDARD.encode(b"hello, world");
        let e = receipt(serde_json::json!([{"image":{"data":not_image}}])).unwrap_err();
        assert!(
            e.contains("document.header[0].image.data is not a PNG or JPEG"),
            "{e}"
        );
        let e =
            receipt(serde_json::json!([{"image":{"data":png_base64(),"width":7}}])).unwrap_err();
        assert!(e.contains("document.header[0].image.width"), "{e}");
        let e = receipt(serde_json::json!([{"image":{"data":png_base64(),"width":"half"}}]))
            .unwrap_err();
        assert!(e.contains("header[0].image.width"), "{e}");
        let e = receipt(serde_json::json!([{"image":{"data":png_base64(),"align":"top"}}]))
            .unwrap_err();
        assert!(e.contains("header[0].image.align"), "{e}");
        let e = receipt(serde_json::json!([1])).unwrap_err();
        assert!(e.contains("header[0]: a receipt line is a string"), "{e}");
        let big = "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8);
        let e = receipt(serde_json::json!([{"image":{"data":big}}])).unwrap_err();
        assert!(
            e.contains("document.header[0].image.data must be at most"),
            "{e}"
        );
    }

    #[test]
    fn barcode_rules() {
        let b = |format, data: &str| Barcode {
            format,
            data: data.into(),
        };
        assert!(b(BarcodeFormat::Ean13, "4006381333931").validate().is_ok());
        assert!(b(BarcodeFormat::Ean13, "40063813339x1").validate().is_err());
        assert!(b(BarcodeFormat::Itf, "123").validate().is_err());
        assert!(b(BarcodeFormat::Code39, "ORDER-17").validate().is_ok());
    }

    #[test]
    fn result_byte_counts_are_optional_and_omitted_when_absent() {
        let old: JobResult = serde_json::from_value(serde_json::json!({
            "v": 1, "job_id": "j-1", "state": "failed", "at": "2026-11-21T10:00:01Z",
            "reason": "interrupted"
        }))
        .unwrap();
        assert_eq!((old.bytes_written, old.bytes_total), (None, None));
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("bytes_"), "{text}");

        let part = JobResult {
            bytes_written: Some(4096),
            bytes_total: Some(10_000),
            ..old
        };
        let value = serde_json::to_value(&part).unwrap();
        assert_eq!(value["bytes_written"], 4096);
        assert_eq!(value["bytes_total"], 10_000);
        assert_eq!(serde_json::from_value::<JobResult>(value).unwrap(), part);
    }

    #[test]
    fn terminal_states() {
        assert!(!JobState::Queued.is_terminal());
        assert!(!JobState::Received.is_terminal());
        assert!(JobState::Printed.is_terminal());
        assert!(JobState::Failed.is_terminal());
        assert!(JobState::Expired.is_terminal());
        assert!(JobState::Cancelled.is_terminal());
        assert_eq!(JobState::Cancelled.as_str(), "cancelled");
        assert_eq!(JobState::from(ResultState::Cancelled), JobState::Cancelled);
    }
}

//! What rendering needs to know about one printer: its width in columns
//! and its character code table ([`CodePage`]). The agent's configuration
//! refers to these types (`printers.<name>.code_page` is a [`CodePage`]);
//! nothing here refers to the configuration.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// An `escpos` character code table, selected with `ESC t n`.
pub use escpos::utils::PageCode;
use serde::Deserialize;

use super::charset::Charset;
use super::fallback::Fonts;
use super::image::Bitmap;
use super::profile;

/// Declares the code pages a printer can be configured with, with their
/// names as `escpos` spells them (its `Display`).
macro_rules! page_codes {
    ($($code:ident),* $(,)?) => {
        /// Code pages a printer can be configured with: every one `escpos`
        /// has a character table for (without a table it cannot encode text
        /// at all).
        pub(crate) const PAGE_CODES: [PageCode; 31] = [$(PageCode::$code),*];
        /// The names of [`PAGE_CODES`], in the same order.
        const PAGE_CODE_NAMES: [&str; 31] = [$(stringify!($code)),*];
    };
}

page_codes![
    PC437, Katakana, PC850, PC852, PC858, PC860, PC863, PC865, PC851, PC853, PC857, PC737,
    ISO8859_2, ISO8859_7, ISO8859_15, WPC1252, PC866, WPC775, PC855, PC861, PC862, PC869, PC1118,
    PC1119, PC1125, WPC1250, WPC1251, WPC1253, WPC1254, WPC1257, KZ1048,
];

/// Looks up a code page by its config name, as `escpos` spells it (`PC437`,
/// `PC850`, `PC858`, `PC852`, `PC866`, `WPC1252`, `ISO8859_15`, `Katakana`,
/// ...) or as the printer database does (`CP858`, `CP1252`, `RK1048`).
/// Case, `-` and `_` are ignored: `pc858`, `ISO-8859-15` work too.
///
/// Returns `None` for unknown names and for the page codes `escpos` has no
/// character table for (`PC720`, `PC864`, `WPC1255`, ...).
pub fn page_code(name: &str) -> Option<PageCode> {
    find(name).map(|i| PAGE_CODES[i])
}

fn find(name: &str) -> Option<usize> {
    let wanted = normalize(name);
    let position = |wanted: &str| {
        PAGE_CODE_NAMES
            .iter()
            .position(|known| normalize(known) == wanted)
    };
    position(&wanted).or_else(|| {
        // The printer database's spelling: CP858 for PC858, CP1252 for
        // WPC1252, RK1048 for KZ1048.
        let number = wanted
            .strip_prefix("CP")
            .or_else(|| wanted.strip_prefix("RK"))?;
        ["PC", "WPC", "KZ"]
            .iter()
            .find_map(|prefix| position(&format!("{prefix}{number}")))
    })
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A code page a printer can be configured with: one [`page_code`] knows,
/// so rendering can always encode text in it. Parsed from its name (see
/// [`page_code`] for the spellings accepted), also when deserialized.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CodePage {
    /// Index into [`PAGE_CODES`].
    index: usize,
}

/// A code page name [`page_code`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown code page {0:?}")]
pub struct UnknownCodePage(pub String);

impl CodePage {
    /// `PC437`, the printers' power-on default and the config default.
    pub const PC437: CodePage = CodePage { index: 0 };

    /// The `escpos` page code, for `ESC t n`.
    pub fn page_code(self) -> PageCode {
        PAGE_CODES[self.index]
    }

    /// The name as `escpos` spells it (`PC437`, `ISO8859_15`), whatever
    /// spelling it was parsed from.
    pub fn as_str(&self) -> &'static str {
        PAGE_CODE_NAMES[self.index]
    }
}

impl Default for CodePage {
    fn default() -> Self {
        CodePage::PC437
    }
}

impl fmt::Debug for CodePage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CodePage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CodePage {
    type Err = UnknownCodePage;

    fn from_str(name: &str) -> Result<Self, UnknownCodePage> {
        find(name)
            .map(|index| CodePage { index })
            .ok_or_else(|| UnknownCodePage(name.to_owned()))
    }
}

impl TryFrom<String> for CodePage {
    type Error = UnknownCodePage;

    fn try_from(name: String) -> Result<Self, UnknownCodePage> {
        name.parse()
    }
}

impl From<CodePage> for PageCode {
    fn from(code: CodePage) -> Self {
        code.page_code()
    }
}

/// How to lay out documents for one printer.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Characters per line in font A: 32 (58 mm paper), 42 or 48 (80 mm).
    pub columns: u8,
    /// The printer's character tables: which code pages it has under which
    /// `ESC t` number, the one selected at the start, its CJK mode.
    pub charset: Arc<Charset>,
    /// Fonts for lines no code page can show; `None`: such characters
    /// print as `?`.
    pub fonts: Option<Arc<Fonts>>,
    /// Printable width in dots: images are never wider.
    pub dots: u16,
    /// The printer's logo, already converted, printed at the top of
    /// receipts with `logo: true`.
    pub logo: Option<Arc<Bitmap>>,
    /// The ESC/POS command images go out with.
    pub image_mode: ImageMode,
    /// Whether the printer draws QR codes itself (`GS ( k`); when not, a
    /// QR code goes out as an image in `image_mode`.
    pub native_qr: bool,
    /// What the printer does where a ticket asks for a cut.
    pub cutter: Cutter,
}

/// How a printer ends a ticket that asks for a cut, from its profile's
/// `paperFullCut` and `paperPartCut` features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cutter {
    /// `GS V A 0`: feed to the cutter and cut through.
    #[default]
    Full,
    /// `GS V B 0`: feed to the cutter and cut leaving one point uncut.
    Partial,
    /// No cutter (58 mm printers with a tear bar): `ESC d 4`, four lines
    /// fed so the last printed line clears the tear bar.
    None,
}

/// `printers.<name>.image_mode`: the ESC/POS command images go out with,
/// because printers differ in which they implement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageMode {
    /// `GS v 0`, in bands of 24 rows ([`Bitmap::raster_bands`]).
    #[default]
    Raster,
    /// `ESC *` 24-dot double density, one band of 24 rows per line
    /// ([`Bitmap::bit_image_bands`]).
    BitImage,
    /// `GS ( L` functions 112 and 50, in bands of 24 rows
    /// ([`Bitmap::graphics_bands`]).
    Graphics,
}

/// The usual dot width of a printer `columns` wide: 576 for 48 columns
/// (80 mm paper, 203 dpi, 12 dots a character), 384 for 32 (58 mm).
pub fn default_dots(columns: u8) -> u16 {
    if columns <= 32 { 384 } else { 576 }
}

impl Default for RenderOptions {
    /// 48 columns, 576 dots, the code pages of the `default` profile
    /// starting in PC437, no fonts, no logo: the config defaults without
    /// fonts.
    fn default() -> Self {
        RenderOptions::new(48, CodePage::PC437)
    }
}

impl RenderOptions {
    /// The options of a printer `columns` wide with the code pages of the
    /// `default` profile starting in `code_page`, its [`default_dots`], no
    /// fonts and no logo.
    pub fn new(columns: u8, code_page: CodePage) -> Self {
        let default =
            profile::profile(profile::DEFAULT_PROFILE).expect("the database has `default`");
        let charset = Charset::new(
            profile::pages(default),
            &profile::database_name(code_page.page_code()),
            None,
        );
        RenderOptions::with_charset(columns, Arc::new(charset))
    }

    /// The options of a printer `columns` wide with `charset`, its
    /// [`default_dots`], no fonts and no logo, raster images, its own QR
    /// codes and a full cut.
    pub fn with_charset(columns: u8, charset: Arc<Charset>) -> Self {
        RenderOptions {
            columns,
            charset,
            fonts: None,
            dots: default_dots(columns),
            logo: None,
            image_mode: ImageMode::Raster,
            native_qr: true,
            cutter: Cutter::Full,
        }
    }

    /// These options with only `page` (at escpos's `ESC t` number for it),
    /// as a printer that has one code page.
    pub fn with_only_page(self, page: PageCode) -> Self {
        RenderOptions {
            charset: Arc::new(Charset::single(page)),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_escpos_spelling() {
        for (code, name) in PAGE_CODES.iter().zip(PAGE_CODE_NAMES) {
            assert_eq!(code.to_string(), name);
        }
    }

    #[test]
    fn code_page_parses_any_spelling_and_keeps_the_canonical_name() {
        let c: CodePage = "iso-8859-15".parse().unwrap();
        assert_eq!(
            (c.as_str(), c.page_code()),
            ("ISO8859_15", PageCode::ISO8859_15)
        );
        assert_eq!(CodePage::default().as_str(), "PC437");
        assert_eq!("CP1252".parse::<CodePage>().unwrap().as_str(), "WPC1252");
        assert_eq!("cp866".parse::<CodePage>().unwrap().as_str(), "PC866");
        let err = "PC720".parse::<CodePage>().unwrap_err();
        assert_eq!(err.to_string(), "unknown code page \"PC720\"");
    }
}

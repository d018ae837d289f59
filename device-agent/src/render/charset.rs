//! Text in any script, as a printer's character tables allow: each
//! character is encoded on its own, switching code pages (`ESC t n`) among
//! those the printer has as the text needs, and using the printer's
//! double-byte mode (`FS &` ... `FS .`) for CJK text where it has one. What
//! no table of the printer can show is reported, so the caller can render
//! that line as an image instead (`fallback.rs`).
//!
//! Where the tables come from: the `escpos` crate's tables for the pages it
//! knows (`PC437`, `PC858`, `PC866`, ...), `encoding_rs` for the Windows and
//! ISO single-byte pages it lacks (`CP1255`, `CP874`, `ISO_8859_5`, ...), and
//! the ESC/POS printer database's own tables (via `escpos-db`) for printer
//! pages no standard knows (`CP3012`, TCVN-3). Which page has which `ESC t`
//! number is the printer's business: a [`Charset`] is built from a printer
//! profile's list (`profile.rs`).
//!
//! Not encoded, on purpose: the Arabic pages (`CP720`, `CP864`, `CP1256`,
//! `ISO_8859_6`) — Arabic needs joining forms and right-to-left layout that
//! printers do not do, so it always goes to the image fallback. Hebrew
//! (`CP862`, `CP1255`) is encoded after the line is put in visual order
//! (Unicode bidi algorithm, UAX #9, with a left-to-right base so columns
//! stay where the layout put them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use encoding_rs::Encoding;
use escpos::utils::PageCode;
use unicode_bidi::{BidiInfo, Level};
use unicode_width::UnicodeWidthChar;

use super::capture::capture;

/// `ESC t n`: select character code table `n`.
const SELECT_PAGE: [u8; 2] = [0x1B, b't'];
/// `FS &`: enter the double-byte (Kanji) character mode.
pub(crate) const KANJI_ON: [u8; 2] = [0x1C, b'&'];
/// `FS .`: leave the double-byte character mode.
pub(crate) const KANJI_OFF: [u8; 2] = [0x1C, b'.'];
/// `FS C 1`: select the Shift_JIS code system for double-byte mode
/// (Japanese models).
pub(crate) const SHIFT_JIS_SYSTEM: [u8; 3] = [0x1C, b'C', 1];

/// Where a code page's characters come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    /// One of the `escpos` crate's tables.
    Escpos(PageCode),
    /// A single-byte `encoding_rs` encoding.
    Single(&'static Encoding),
    /// The upper half (0x80–0xFF) as the printer database lists it.
    Upper(&'static [char; 128]),
}

impl Table {
    /// The byte for `c` (never ASCII: callers send ASCII as it is).
    fn byte(self, c: char) -> Option<u8> {
        match self {
            Table::Escpos(page) => {
                // escpos writes a character of the page's table as its one
                // byte and anything else as UTF-8 (two bytes or more).
                let mut utf8 = [0u8; 4];
                let text: &str = c.encode_utf8(&mut utf8);
                match capture(Some(page), 48, |p| p.write(text).map(drop)) {
                    Ok(bytes) if bytes.len() == 1 && bytes[0] >= 0x80 => Some(bytes[0]),
                    _ => None,
                }
            }
            Table::Single(encoding) => {
                let mut utf8 = [0u8; 4];
                let (bytes, _, unmappable) = encoding.encode(c.encode_utf8(&mut utf8));
                match (&*bytes, unmappable) {
                    ([b], false) if *b >= 0x80 => Some(*b),
                    _ => None,
                }
            }
            Table::Upper(chars) => chars
                .iter()
                .position(|&t| t == c && !t.is_ascii())
                .map(|i| 0x80 + i as u8),
        }
    }
}

/// Unicode ranges an `escpos` table's upper half draws from: Latin-1 and
/// Latin Extended, Greek, Cyrillic, Hebrew, Thai, punctuation, currency,
/// letterlike, arrows, maths, box drawing, blocks and shapes, half-width
/// katakana. Its tables are `char -> byte` only, so reading a byte back
/// searches these once per page.
const ESCPOS_TABLE_RANGES: [std::ops::RangeInclusive<u32>; 6] = [
    0xA0..=0x04FF,
    0x0590..=0x05FF,
    0x0E00..=0x0E7F,
    0x2000..=0x22FF,
    0x2300..=0x25FF,
    0xFF61..=0xFF9F,
];

/// A table's upper half read back: byte `0x80 + i` is `[i]`.
type UpperHalf = Arc<[Option<char>; 128]>;

/// The upper half of an `escpos` table read back. Built on first use per
/// page (a few thousand lookups, once).
fn escpos_upper_half(page: PageCode) -> UpperHalf {
    static HALVES: std::sync::OnceLock<Mutex<HashMap<u8, UpperHalf>>> = std::sync::OnceLock::new();
    let halves = HALVES.get_or_init(Mutex::default);
    let mut halves = halves.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(halves.entry(u8::from(page)).or_insert_with(|| {
        let mut half = [None; 128];
        for c in ESCPOS_TABLE_RANGES
            .into_iter()
            .flatten()
            .filter_map(char::from_u32)
        {
            if let Some(b) = Table::Escpos(page).byte(c) {
                half[usize::from(b - 0x80)].get_or_insert(c);
            }
        }
        Arc::new(half)
    }))
}

impl Table {
    /// The character `byte` (0x80 or above) prints as, if the table has
    /// one there.
    pub(crate) fn char_of(self, byte: u8) -> Option<char> {
        let i = usize::from(byte.checked_sub(0x80)?);
        match self {
            Table::Escpos(page) => escpos_upper_half(page)[i],
            Table::Single(encoding) => {
                let one = [byte];
                let (text, had_errors) = encoding.decode_without_bom_handling(&one);
                let c = text.chars().next()?;
                (!had_errors && c != '\u{FFFD}').then_some(c)
            }
            Table::Upper(chars) => Some(chars[i]).filter(|c| !c.is_ascii()),
        }
    }
}

/// A code page of one printer: its `ESC t` number, its name (as the
/// printer database spells it: `CP437`, `CP866`, `ISO_8859_7`) and its
/// table.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) number: u8,
    pub(crate) name: String,
    pub(crate) table: Table,
}

/// A printer's double-byte character mode (`FS &`), for CJK text.
/// `printers.<name>.cjk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cjk {
    /// Simplified Chinese printers: GB18030's two-byte part (GBK, GB2312).
    Gb18030,
    /// Traditional Chinese printers.
    Big5,
    /// Japanese printers; `FS C 1` selects the code system.
    ShiftJis,
    /// Korean printers (KS X 1001).
    EucKr,
}

impl Cjk {
    fn encoding(self) -> &'static Encoding {
        match self {
            Cjk::Gb18030 => encoding_rs::GB18030,
            Cjk::Big5 => encoding_rs::BIG5,
            Cjk::ShiftJis => encoding_rs::SHIFT_JIS,
            Cjk::EucKr => encoding_rs::EUC_KR,
        }
    }

    /// The two bytes of `c` in this mode, if it has them.
    fn bytes(self, c: char) -> Option<[u8; 2]> {
        let mut utf8 = [0u8; 4];
        let (bytes, _, unmappable) = self.encoding().encode(c.encode_utf8(&mut utf8));
        match (&*bytes, unmappable) {
            ([a, b], false) if *a >= 0x80 => Some([*a, *b]),
            _ => None,
        }
    }
}

/// How one non-ASCII character can be printed.
#[derive(Debug, Clone, Default)]
struct Ways {
    /// `(index into Charset::pages, byte)` for every page that has it.
    pages: Vec<(usize, u8)>,
    /// Its two bytes in the printer's double-byte mode.
    wide: Option<[u8; 2]>,
}

impl Ways {
    fn byte_in(&self, page: usize) -> Option<u8> {
        self.pages.iter().find(|(p, _)| *p == page).map(|(_, b)| *b)
    }

    fn printable(&self) -> bool {
        self.wide.is_some() || !self.pages.is_empty()
    }
}

/// The character tables of one printer, and how to write text with them.
/// Shared by every render for that printer; what it learned about each
/// character is kept (a few hundred entries for a menu).
#[derive(Debug)]
pub struct Charset {
    pages: Vec<Page>,
    /// Index into `pages` of the page selected after `ESC @`.
    start: usize,
    cjk: Option<Cjk>,
    known: Mutex<HashMap<char, Ways>>,
}

/// The code page state of the printer while a document is written: which
/// page `ESC t` last selected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    page: usize,
}

impl Charset {
    /// A printer with `pages` (at least one; the first is used when `start`
    /// is not among them), starting in the page named `start`, with an
    /// optional double-byte mode.
    pub(crate) fn new(pages: Vec<Page>, start: &str, cjk: Option<Cjk>) -> Charset {
        assert!(!pages.is_empty(), "a charset needs a page");
        let start = pages.iter().position(|p| p.name == start).unwrap_or(0);
        Charset {
            pages,
            start,
            cjk,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// One page only, at escpos's (Epson's) `ESC t` number for it.
    pub(crate) fn single(page: PageCode) -> Charset {
        Charset::new(
            vec![Page {
                number: u8::from(page),
                name: page.to_string(),
                table: Table::Escpos(page),
            }],
            "",
            None,
        )
    }

    /// The page `ESC t number` selects on this printer.
    pub(crate) fn page_numbered(&self, number: u8) -> Option<&Page> {
        self.pages.iter().find(|p| p.number == number)
    }

    /// The characters of the double-byte bytes `pair` in this printer's
    /// CJK mode (GB18030 when it has none configured, what most such
    /// printers run).
    pub(crate) fn wide_char(&self, pair: [u8; 2]) -> Option<char> {
        let encoding = self.cjk.unwrap_or(Cjk::Gb18030).encoding();
        let (text, had_errors) = encoding.decode_without_bom_handling(&pair);
        let mut chars = text.chars();
        match (chars.next(), chars.next(), had_errors) {
            (Some(c), None, false) => Some(c),
            _ => None,
        }
    }

    /// The pages, in the order they are tried.
    pub(crate) fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// The page selected at the start of every document.
    pub(crate) fn start_page(&self) -> &Page {
        &self.pages[self.start]
    }

    /// The state right after [`Charset::start_bytes`].
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor { page: self.start }
    }

    /// What follows `ESC @`: `ESC t n` of the start page, and `FS C 1`
    /// for Shift_JIS printers.
    pub(crate) fn start_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SELECT_PAGE);
        out.push(self.start_page().number);
        if self.cjk == Some(Cjk::ShiftJis) {
            out.extend_from_slice(&SHIFT_JIS_SYSTEM);
        }
        out
    }

    fn with_ways<R>(&self, c: char, f: impl FnOnce(&Ways) -> R) -> R {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let ways = known.entry(c).or_insert_with(|| Ways {
            pages: self
                .pages
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.table.byte(c).map(|b| (i, b)))
                .collect(),
            wide: self.cjk.and_then(|cjk| cjk.bytes(c)),
        });
        f(ways)
    }

    /// Whether `c` prints as text on this printer (ASCII always does).
    pub(crate) fn can_print(&self, c: char) -> bool {
        c.is_ascii() || self.with_ways(c, Ways::printable)
    }

    /// Whether every character of `text` prints as text.
    pub(crate) fn can_print_all(&self, text: &str) -> bool {
        text.chars().all(|c| self.can_print(c))
    }

    /// The bytes of one line of `text`, without the line feed: ASCII as it
    /// is, other characters in the current page while it has them, else in
    /// the page that has the longest run of what follows (`ESC t n` before
    /// it), CJK wide characters in double-byte mode (`FS &` ... `FS .`, left
    /// again at the end of each run). Characters no table has become `?`;
    /// callers that want an image instead ask [`Charset::can_print_all`]
    /// first. Right-to-left runs are put in visual order first.
    pub(crate) fn encode_line(&self, text: &str, cursor: &mut Cursor) -> Vec<u8> {
        let visual = visual_order(text);
        let chars: Vec<char> = visual.chars().collect();
        let mut out = Vec::with_capacity(chars.len());
        let mut kanji = false;
        for (i, &c) in chars.iter().enumerate() {
            if c.is_ascii() {
                if kanji {
                    out.extend_from_slice(&KANJI_OFF);
                    kanji = false;
                }
                out.push(c as u8);
                continue;
            }
            let (wide, here, best) = self.with_ways(c, |ways| {
                let wide_first = c.width() == Some(2) || ways.pages.is_empty();
                (
                    ways.wide.filter(|_| wide_first),
                    ways.byte_in(cursor.page),
                    ways.pages.first().map(|(p, _)| *p),
                )
            });
            if let Some(pair) = wide {
                if !kanji {
                    out.extend_from_slice(&KANJI_ON);
                    kanji = true;
                }
                out.extend_from_slice(&pair);
                continue;
            }
            if kanji {
                out.extend_from_slice(&KANJI_OFF);
                kanji = false;
            }
            let byte = match (here, best) {
                (Some(b), _) => b,
                (None, Some(_)) => {
                    let page = self.best_page(&chars[i..]);
                    out.extend_from_slice(&SELECT_PAGE);
                    out.push(self.pages[page].number);
                    cursor.page = page;
                    self.with_ways(c, |w| w.byte_in(page)).unwrap_or(b'?')
                }
                (None, None) => b'?',
            };
            out.push(byte);
        }
        if kanji {
            out.extend_from_slice(&KANJI_OFF);
        }
        out
    }

    /// The page that prints the longest prefix of `rest` (ASCII prints in
    /// every page; wide characters that go in double-byte mode end it), the
    /// first such page on a tie. `rest[0]` is in at least one page.
    fn best_page(&self, rest: &[char]) -> usize {
        let mut candidates: Vec<usize> =
            self.with_ways(rest[0], |w| w.pages.iter().map(|(p, _)| *p).collect());
        for &c in &rest[1..] {
            if c.is_ascii() {
                continue;
            }
            let narrowed: Vec<usize> = self.with_ways(c, |w| {
                candidates
                    .iter()
                    .copied()
                    .filter(|&p| w.byte_in(p).is_some())
                    .collect()
            });
            if narrowed.is_empty() {
                break;
            }
            candidates = narrowed;
        }
        candidates[0]
    }
}

/// `text` in the order it is printed left to right, when it has
/// right-to-left characters (Hebrew); as it is otherwise. The base
/// direction is left to right, so a line the layout padded into columns
/// keeps its columns.
pub(crate) fn visual_order(text: &str) -> std::borrow::Cow<'_, str> {
    let info = BidiInfo::new(text, Some(Level::ltr()));
    if !info.has_rtl() {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    for para in &info.paragraphs {
        out.push_str(&info.reorder_line(para, para.range.clone()));
    }
    out.into()
}

/// Columns `c` takes in font A: 2 for East Asian wide characters (a CJK
/// character is 24 × 24 dots), 0 for combining marks, 1 otherwise.
pub(crate) fn columns_of(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// Columns `text` takes ([`columns_of`] summed).
pub(crate) fn text_columns(text: &str) -> usize {
    text.chars().map(columns_of).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn western_and_cyrillic() -> Charset {
        Charset::new(
            vec![
                Page {
                    number: 0,
                    name: "CP437".into(),
                    table: Table::Escpos(PageCode::PC437),
                },
                Page {
                    number: 17,
                    name: "CP866".into(),
                    table: Table::Escpos(PageCode::PC866),
                },
                Page {
                    number: 19,
                    name: "CP858".into(),
                    table: Table::Escpos(PageCode::PC858),
                },
                Page {
                    number: 49,
                    name: "CP1255".into(),
                    table: Table::Single(encoding_rs::WINDOWS_1255),
                },
            ],
            "CP437",
            Some(Cjk::Gb18030),
        )
    }

    #[test]
    fn switches_pages_only_when_the_current_one_lacks_a_character() {
        let cs = western_and_cyrillic();
        let mut cursor = cs.cursor();
        // é is in PC437 (0x82): no switch.
        assert_eq!(cs.encode_line("Café", &mut cursor), b"Caf\x82");
        // Д is in PC866 only (0x84).
        assert_eq!(
            cs.encode_line("Да é", &mut cursor),
            [0x1B, b't', 17, 0x84, 0xA0, b' ', 0x1B, b't', 0, 0x82]
        );
        // The cursor stays where the last line left the printer.
        assert_eq!(cs.encode_line("é", &mut cursor), [0x82]);
        // € is in PC858 only.
        assert_eq!(
            cs.encode_line("5€", &mut cursor),
            [b'5', 0x1B, b't', 19, 0xD5]
        );
    }

    #[test]
    fn picks_the_page_that_covers_the_longest_run() {
        let cs = western_and_cyrillic();
        let mut cursor = cs.cursor();
        // ü is in PC437 and PC858; € only in PC858: one switch, to 19.
        assert_eq!(
            cs.encode_line("€ü", &mut cursor),
            [0x1B, b't', 19, 0xD5, 0x81]
        );
    }

    #[test]
    fn cjk_goes_in_double_byte_mode_and_the_rest_stays_single_byte() {
        let cs = western_and_cyrillic();
        let mut cursor = cs.cursor();
        // 汉 is B9 BA in GB2312.
        assert_eq!(
            cs.encode_line("1 汉 é", &mut cursor),
            [b'1', b' ', 0x1C, b'&', 0xBA, 0xBA, 0x1C, b'.', b' ', 0x82]
        );
    }

    #[test]
    fn hebrew_is_put_in_visual_order() {
        let cs = western_and_cyrillic();
        let mut cursor = cs.cursor();
        // שלום in windows-1255: ש F9, ל EC, ו E5, ם ED; printed reversed.
        assert_eq!(
            cs.encode_line("1 שלום", &mut cursor),
            [b'1', b' ', 0x1B, b't', 49, 0xED, 0xE5, 0xEC, 0xF9]
        );
    }

    #[test]
    fn what_no_table_has_is_reported_and_written_as_a_question_mark() {
        let cs = western_and_cyrillic();
        assert!(cs.can_print_all("Café Да 汉"));
        assert!(!cs.can_print_all("سلام"));
        assert!(!cs.can_print('😀'));
        let mut cursor = cs.cursor();
        assert_eq!(cs.encode_line("a😀", &mut cursor), b"a?");
    }

    #[test]
    fn columns_count_wide_characters_twice() {
        assert_eq!(text_columns("汉字 ab"), 7);
        assert_eq!(text_columns("e\u{301}"), 1);
    }
}

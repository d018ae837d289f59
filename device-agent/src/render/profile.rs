//! Printer profiles from the community ESC/POS printer database
//! (<https://github.com/receipt-print-hq/escpos-printer-db>, data under
//! CC BY 4.0, through the `escpos-db` crate): per model, the dot width, the
//! columns of font A, the code pages with their `ESC t` numbers, and the
//! features (cut, QR codes, raster and column images, drawer pulse).
//!
//! `printers.<name>.profile = "TM-T88V"` picks one (`default`, `simple`,
//! `SRP-S300`, ... — every name of the database; `kiosk-agent printers
//! --profiles` lists them). Without one, the database's `default` profile
//! (Epson's numbering) is used for code pages, and the agent's own defaults
//! for width and dots.

use escpos_db::{ALL_PROFILES, Encoding, Profile};

use super::charset::{Page, Table};
use super::options::{Cutter, ImageMode};
use escpos::utils::PageCode;

/// The widest dot width taken from a profile (a 112 mm, 203 dpi printer
/// has 832); wider entries of the database are taken as unknown.
const MAX_DOTS: u16 = 2048;

/// The profile used when none is configured.
pub const DEFAULT_PROFILE: &str = "default";

/// A profile name the database does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown printer profile {name:?}; known: {known}")]
pub struct UnknownProfile {
    /// The name asked for.
    pub name: String,
    /// Every name of the database, comma-separated.
    pub known: String,
}

/// Looks a profile up by name, as the database spells it (`TM-T88V`,
/// `default`); case is ignored.
///
/// # Errors
/// [`UnknownProfile`] listing the names there are.
pub fn profile(name: &str) -> Result<&'static Profile<'static>, UnknownProfile> {
    ALL_PROFILES
        .entries()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, p)| *p)
        .ok_or_else(|| UnknownProfile {
            name: name.to_owned(),
            known: profile_names().join(", "),
        })
}

/// Every profile name of the database, sorted.
pub fn profile_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = ALL_PROFILES.keys().copied().collect();
    names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
    names
}

/// The text of `kiosk-agent printers --profiles`: one line per profile,
/// its name (as `printers.<name>.profile` takes it), vendor, dot width,
/// columns, the code pages this agent can use of it, how it cuts (`full`,
/// `partial`, `no`: the renderer feeds instead), whether it prints QR codes
/// itself (`no`: the renderer sends them as images) and its image command,
/// then the database's attribution (CC BY 4.0).
pub fn listing() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<15} {:>5} {:>7} {:>10}  {:<7} {:<3}  image",
        "profile", "vendor", "dots", "columns", "code pages", "cut", "qr"
    );
    for name in profile_names() {
        let Ok(p) = profile(name) else { continue };
        let f = facts(p);
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let image = match f.image_mode {
            Some(ImageMode::Raster) => "raster",
            Some(ImageMode::BitImage) => "bit_image",
            Some(ImageMode::Graphics) => "graphics",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<18} {:<15} {:>5} {:>7} {:>10}  {:<7} {:<3}  {image}",
            name,
            p.vendor,
            or_dash(f.dots.map(|d| d.to_string())),
            or_dash(f.columns.map(|c| c.to_string())),
            pages(p).len(),
            match f.cut {
                Cutter::Full => "full",
                Cutter::Partial => "partial",
                Cutter::None => "no",
            },
            if f.qr { "yes" } else { "no" },
        );
    }
    let _ = writeln!(
        out,
        "\nFrom the ESC/POS printer database, https://github.com/receipt-print-hq/escpos-printer-db (CC BY 4.0)."
    );
    out
}

/// What the agent takes from a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileFacts {
    /// Printable width in dots, when the database knows it.
    pub dots: Option<u16>,
    /// Characters per line in font A (the profile's font 0).
    pub columns: Option<u8>,
    /// The image command the printer has: `raster` when it lists `GS v 0`,
    /// else `bit_image` when it lists `ESC *`, else `graphics`.
    pub image_mode: Option<ImageMode>,
    /// How it cuts paper: full cut when it has one, else partial, else
    /// none (a tear bar).
    pub cut: Cutter,
    /// Whether it prints QR codes (`GS ( k`).
    pub qr: bool,
}

/// The facts of `p`.
pub fn facts(p: &Profile<'_>) -> ProfileFacts {
    let f = &p.features;
    let image_mode = if f.bit_image_raster() {
        Some(ImageMode::Raster)
    } else if f.bit_image_column() {
        Some(ImageMode::BitImage)
    } else if f.graphics() {
        Some(ImageMode::Graphics)
    } else {
        None
    };
    ProfileFacts {
        // One entry (TUP500) says 65535: no printer is that wide.
        dots: p
            .media
            .width
            .as_ref()
            .map(|w| w.px)
            .filter(|&px| px <= MAX_DOTS),
        columns: p.fonts.get(0).map(|f| f.columns),
        image_mode,
        cut: if f.paper_full_cut() {
            Cutter::Full
        } else if f.paper_part_cut() {
            Cutter::Partial
        } else {
            Cutter::None
        },
        qr: f.qr_code(),
    }
}

/// The profile's code pages this agent has a table for, in `ESC t` order.
/// Arabic pages are left out on purpose (see `charset.rs`), and so are
/// `CP851` (the database: "not used, due to inconsistencies between
/// implementations") and the database's unknown and Star-specific entries.
///
/// The order is the order they are tried in when text needs another page:
/// the widespread pages first, by `ESC t` number, then the regional ones
/// whose printer implementations vary ([`is_rare`]), so Turkish goes out in
/// `CP857` rather than `CP853`, Cyrillic in `CP866` rather than `CP855`.
pub(crate) fn pages(p: &Profile<'_>) -> Vec<Page> {
    let mut pages: Vec<Page> = p
        .code_pages
        .iter()
        .filter_map(|(number, enc)| {
            table(*enc).map(|table| Page {
                number,
                name: encoding_name(*enc),
                table,
            })
        })
        .collect();
    pages.sort_by_key(|p| (is_rare(&p.name), p.number));
    pages
}

/// Code pages tried only after the others: regional variants (South
/// European `CP853`, Cyrillic `CP855`, Ukrainian `CP1125`, Baltic `CP775`,
/// Latvian and Cyrillic `CP3011`/`CP3012`, Kazakh `RK1048`), half-width
/// Katakana, vendor-specific `OXHOO_EUROPEAN` and Vietnamese TCVN-3 (its
/// two halves hold lower and upper case).
fn is_rare(name: &str) -> bool {
    matches!(
        name,
        "CP853"
            | "CP855"
            | "CP1125"
            | "CP775"
            | "CP3011"
            | "CP3012"
            | "RK1048"
            | "KATAKANA"
            | "OXHOO_EUROPEAN"
            | "TCVN_3_1"
            | "TCVN_3_2"
    )
}

/// The database's name of a code page: `CP437`, `ISO_8859_7`, `KATAKANA`.
pub fn encoding_name(enc: Encoding) -> String {
    format!("{enc:?}")
}

/// The table of a database code page, if this agent has one.
fn table(enc: Encoding) -> Option<Table> {
    use Encoding as E;
    let escpos = |p| Some(Table::Escpos(p));
    let single = |e| Some(Table::Single(e));
    match enc {
        E::CP437 => escpos(PageCode::PC437),
        E::KATAKANA => escpos(PageCode::Katakana),
        E::CP850 => escpos(PageCode::PC850),
        E::CP852 => escpos(PageCode::PC852),
        E::CP858 => escpos(PageCode::PC858),
        E::CP860 => escpos(PageCode::PC860),
        E::CP863 => escpos(PageCode::PC863),
        E::CP865 => escpos(PageCode::PC865),
        E::CP853 => escpos(PageCode::PC853),
        E::CP857 => escpos(PageCode::PC857),
        E::CP737 => escpos(PageCode::PC737),
        E::ISO_8859_2 => escpos(PageCode::ISO8859_2),
        E::ISO_8859_7 => escpos(PageCode::ISO8859_7),
        E::ISO_8859_15 => escpos(PageCode::ISO8859_15),
        E::CP1252 => escpos(PageCode::WPC1252),
        E::CP866 => escpos(PageCode::PC866),
        E::CP775 => escpos(PageCode::WPC775),
        E::CP855 => escpos(PageCode::PC855),
        E::CP861 => escpos(PageCode::PC861),
        E::CP862 => escpos(PageCode::PC862),
        E::CP869 => escpos(PageCode::PC869),
        E::CP1125 => escpos(PageCode::PC1125),
        E::CP1250 => escpos(PageCode::WPC1250),
        E::CP1251 => escpos(PageCode::WPC1251),
        E::CP1253 => escpos(PageCode::WPC1253),
        E::CP1254 => escpos(PageCode::WPC1254),
        E::CP1257 => escpos(PageCode::WPC1257),
        E::RK1048 => escpos(PageCode::KZ1048),
        E::CP1255 => single(encoding_rs::WINDOWS_1255),
        E::CP1258 => single(encoding_rs::WINDOWS_1258),
        E::CP874 => single(encoding_rs::WINDOWS_874),
        E::ISO_8859_3 => single(encoding_rs::ISO_8859_3),
        E::ISO_8859_4 => single(encoding_rs::ISO_8859_4),
        E::ISO_8859_5 => single(encoding_rs::ISO_8859_5),
        E::CP3011 | E::CP3012 | E::TCVN_3_1 | E::TCVN_3_2 | E::OXHOO_EUROPEAN => {
            enc.data().map(Table::Upper)
        }
        _ => None,
    }
}

/// The database name of the page `escpos` calls `page` (`PC858` →
/// `CP858`), for matching `printers.<name>.code_page` against a profile.
pub(crate) fn database_name(page: PageCode) -> String {
    let name = page.to_string();
    let name = name
        .strip_prefix("WPC")
        .or_else(|| name.strip_prefix("PC"))
        .map(|n| format!("CP{n}"))
        .unwrap_or(name);
    match name.as_str() {
        "ISO8859_2" => "ISO_8859_2".into(),
        "ISO8859_7" => "ISO_8859_7".into(),
        "ISO8859_15" => "ISO_8859_15".into(),
        "Katakana" => "KATAKANA".into(),
        "KZ1048" => "RK1048".into(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tm_t88v_has_its_width_columns_and_epson_numbers() {
        let p = profile("tm-t88v").unwrap();
        let f = facts(p);
        assert_eq!(f.dots, Some(512));
        assert_eq!(f.columns, Some(42));
        assert_eq!(f.image_mode, Some(ImageMode::Raster));
        assert!(f.cut == Cutter::Full && f.qr);
        let pages = pages(p);
        let number = |name: &str| pages.iter().find(|p| p.name == name).map(|p| p.number);
        assert_eq!(number("CP437"), Some(0));
        assert_eq!(number("CP866"), Some(17));
        assert_eq!(number("CP1255"), Some(49));
        // Arabic is left to the image fallback.
        assert_eq!(number("CP864"), None);
        assert_eq!(number("CP1256"), None);
    }

    #[test]
    fn the_listing_has_every_profile_and_the_attribution() {
        let text = listing();
        for name in profile_names() {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}");
        }
        let t88v = text.lines().find(|l| l.starts_with("TM-T88V ")).unwrap();
        assert!(
            t88v.contains("Epson") && t88v.contains("512") && t88v.ends_with("raster"),
            "{t88v}"
        );
        assert!(text.contains("CC BY 4.0"));
    }

    #[test]
    fn unknown_profiles_list_the_known_ones() {
        let err = profile("TM-X1").unwrap_err();
        assert!(err.to_string().contains("TM-T88V"), "{err}");
        assert!(profile_names().contains(&"default"));
    }

    #[test]
    fn escpos_names_map_to_database_names() {
        assert_eq!(database_name(PageCode::PC858), "CP858");
        assert_eq!(database_name(PageCode::WPC1252), "CP1252");
        assert_eq!(database_name(PageCode::ISO8859_15), "ISO_8859_15");
        assert_eq!(database_name(PageCode::KZ1048), "RK1048");
    }
}

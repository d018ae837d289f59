//! Lines no character table of the printer can show (Arabic, which also
//! needs joining forms; Thai on a Western printer; emoji) are drawn with a
//! font and printed as an image.
//!
//! Shaping (HarfBuzz's algorithm, through `harfrust`), the Unicode bidi
//! algorithm (right-to-left runs), font fallback across the configured
//! fonts and rasterizing (`swash`) are the `cosmic-text` crate's; only the
//! placing on the paper is ours. A line is cut at runs of two or more
//! spaces (where the layout padded columns) and each piece is drawn at the
//! dot position of its column, so amounts stay flush right under each
//! other; inside a piece, cosmic-text orders the text as the bidi algorithm
//! says.
//!
//! Fonts: `printers.<name>.font`, a font file or a directory of them;
//! without it, Debian's Noto fonts (`fonts-noto-core`) and DejaVu where
//! installed ([`default_font_paths`]). They are read on the first line that
//! needs them, not at start-up.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cosmic_text::{
    Attrs, Buffer, Color, Family, FontSystem, Metrics, Shaping, SwashCache, UnderlineStyle, Weight,
    Wrap,
};
use image::{GrayImage, Luma, imageops};

use super::image::Bitmap;

/// Where Debian installs the fonts looked for when none is configured:
/// `fonts-noto-core` (Noto Sans and its scripts: Arabic, Hebrew, Thai,
/// Devanagari, ...), `fonts-noto-cjk`, `fonts-noto-color-emoji`, DejaVu.
pub const DEBIAN_FONT_DIRS: [&str; 4] = [
    "/usr/share/fonts/truetype/noto",
    "/usr/share/fonts/opentype/noto",
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/noto",
];

/// Dot height of one text line of font A: 24-dot characters and the
/// printers' default line spacing (`ESC 2`, 30 dots at 203 dpi).
const LINE_DOTS: f32 = 30.0;
/// Font size in dots for a font A line: the em of a 24-dot character.
const FONT_DOTS: f32 = 24.0;

/// The fonts that exist of [`DEBIAN_FONT_DIRS`].
pub fn default_font_paths() -> Vec<PathBuf> {
    DEBIAN_FONT_DIRS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect()
}

/// How a fallback line looks: the text style of the line it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Look {
    pub(crate) bold: bool,
    pub(crate) underline: bool,
    pub(crate) invert: bool,
    /// Character width multiplier, 1 to 8 (`GS !`).
    pub(crate) width: u8,
    /// Character height multiplier, 1 to 8.
    pub(crate) height: u8,
}

/// A set of fonts for fallback lines, loaded on first use and shared by
/// every render for a printer.
pub struct Fonts {
    paths: Vec<PathBuf>,
    loaded: OnceLock<Option<Mutex<Engine>>>,
}

impl std::fmt::Debug for Fonts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fonts").field("paths", &self.paths).finish()
    }
}

struct Engine {
    system: FontSystem,
    cache: SwashCache,
}

impl Fonts {
    /// Fonts from `paths`, each a font file (TrueType, OpenType, a
    /// collection) or a directory searched recursively. Nothing is read
    /// until a line needs it.
    pub fn new(paths: Vec<PathBuf>) -> Fonts {
        Fonts {
            paths,
            loaded: OnceLock::new(),
        }
    }

    fn engine(&self) -> Option<&Mutex<Engine>> {
        self.loaded
            .get_or_init(|| {
                let mut db = cosmic_text::fontdb::Database::new();
                for path in &self.paths {
                    load(&mut db, path);
                }
                if db.is_empty() {
                    tracing::warn!(paths = ?self.paths, "no font found for text the printer cannot show; such characters print as ?");
                    return None;
                }
                let family = ["Noto Sans", "DejaVu Sans"]
                    .into_iter()
                    .find(|f| db.faces().any(|face| face.families.iter().any(|(n, _)| n == f)))
                    .map(str::to_owned)
                    .or_else(|| db.faces().next().and_then(|f| f.families.first()).map(|(n, _)| n.clone()));
                if let Some(family) = family {
                    db.set_sans_serif_family(family);
                }
                tracing::info!(faces = db.len(), paths = ?self.paths, "fonts loaded for text drawn as images");
                Some(Mutex::new(Engine {
                    system: FontSystem::new_with_locale_and_db("en-US".into(), db),
                    cache: SwashCache::new(),
                }))
            })
            .as_ref()
    }

    /// Draws one laid-out line `columns` characters wide across `dots`
    /// dots, in `look`. Characters no font has a glyph for are drawn as
    /// `?`. Returns `None` when there are no fonts at all.
    ///
    /// The bitmap is [`LINE_DOTS`] × `look.height` rows high and as wide as
    /// its ink (at least 8 dots), so `ESC a` can align it.
    pub(crate) fn draw_line(
        &self,
        text: &str,
        columns: usize,
        dots: u32,
        look: Look,
    ) -> Option<Bitmap> {
        let mut engine = self.engine()?.lock().unwrap_or_else(|e| e.into_inner());
        let Engine { system, cache } = &mut *engine;
        let scale = f32::from(look.height.max(1));
        let stretch = f32::from(look.width.max(1)) / scale;
        let height = (LINE_DOTS * scale).round() as u32;
        let cell = dots as f32 / columns.max(1) as f32;
        let mut canvas = GrayImage::from_pixel(dots, height, Luma([255]));
        let line_columns = super::charset::text_columns(text);
        let pieces = pieces(text);
        let many = pieces.len() > 1;
        for (start_col, piece) in &pieces {
            let piece_columns = super::charset::text_columns(piece);
            let gray = draw_piece(system, cache, piece, scale, look)?;
            let gray = if (stretch - 1.0).abs() > f32::EPSILON {
                let w = ((gray.width() as f32) * stretch).round().max(1.0) as u32;
                imageops::resize(&gray, w, gray.height(), imageops::FilterType::Triangle)
            } else {
                gray
            };
            let flush_right = many && start_col + piece_columns == line_columns;
            let x = if flush_right {
                (line_columns as f32 * cell - gray.width() as f32).max(0.0)
            } else {
                *start_col as f32 * cell
            };
            blit(&mut canvas, &gray, x.round() as i64);
        }
        if look.invert {
            for p in canvas.pixels_mut() {
                p.0[0] = 255 - p.0[0];
            }
        }
        let right = if look.invert {
            dots
        } else {
            ink_right(&canvas).max(8).min(dots)
        };
        let cropped = imageops::crop_imm(&canvas, 0, 0, right, height).to_image();
        Some(Bitmap::from_bilevel(&cropped))
    }

    /// The glyphs one piece shapes to, left to right as drawn: `(byte
    /// offset in the piece, glyph id)`. For tests of shaping and order.
    #[cfg(test)]
    pub(crate) fn shaped(&self, text: &str) -> Option<Vec<(usize, u16)>> {
        let mut engine = self.engine()?.lock().unwrap();
        let Engine { system, .. } = &mut *engine;
        let buffer = shape(
            system,
            text,
            1.0,
            Look {
                bold: false,
                underline: false,
                invert: false,
                width: 1,
                height: 1,
            },
        );
        let mut glyphs: Vec<(f32, usize, u16)> = buffer
            .layout_runs()
            .flat_map(|r| r.glyphs.iter().map(|g| (g.x, g.start, g.glyph_id)))
            .collect();
        glyphs.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(glyphs.into_iter().map(|(_, s, g)| (s, g)).collect())
    }
}

fn load(db: &mut cosmic_text::fontdb::Database, path: &Path) {
    if path.is_dir() {
        db.load_fonts_dir(path);
    } else if let Err(e) = db.load_font_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot read font");
    }
}

/// The pieces of a line between runs of two or more spaces, each with the
/// column it starts at.
fn pieces(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut column = 0;
    let mut current = String::new();
    let mut start = 0;
    let mut spaces = 0;
    for c in text.chars() {
        if c == ' ' {
            spaces += 1;
        } else {
            if spaces >= 2 || current.is_empty() {
                if !current.is_empty() {
                    out.push((start, std::mem::take(&mut current)));
                }
                start = column;
            } else {
                current.extend(std::iter::repeat_n(' ', spaces));
            }
            spaces = 0;
            current.push(c);
        }
        column += super::charset::columns_of(c);
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

fn shape(system: &mut FontSystem, text: &str, scale: f32, look: Look) -> Buffer {
    let metrics = Metrics::new(FONT_DOTS * scale, LINE_DOTS * scale);
    let mut buffer = Buffer::new(system, metrics);
    buffer.set_wrap(Wrap::None);
    buffer.set_size(None, Some(LINE_DOTS * scale));
    let mut attrs = Attrs::new()
        .family(Family::SansSerif)
        .color(Color::rgb(0, 0, 0));
    if look.bold {
        attrs = attrs.weight(Weight::BOLD);
    }
    if look.underline {
        attrs = attrs.underline(UnderlineStyle::Single);
    }
    buffer.set_text(text, &attrs, Shaping::Advanced, None);
    buffer.shape_until_scroll(system, false);
    buffer
}

/// One piece in gray (0 black, 255 white), as wide as its advance.
/// Characters without a glyph in any font become `?`.
fn draw_piece(
    system: &mut FontSystem,
    cache: &mut SwashCache,
    piece: &str,
    scale: f32,
    look: Look,
) -> Option<GrayImage> {
    let mut buffer = shape(system, piece, scale, look);
    let missing: Vec<std::ops::Range<usize>> = buffer
        .layout_runs()
        .flat_map(|r| {
            r.glyphs
                .iter()
                .filter(|g| g.glyph_id == 0)
                .map(|g| g.start..g.end)
        })
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            text = piece,
            "no font has some characters of this line; they print as ?"
        );
        let mut text = String::with_capacity(piece.len());
        for (i, c) in piece.char_indices() {
            text.push(if missing.iter().any(|r| r.contains(&i)) {
                '?'
            } else {
                c
            });
        }
        buffer = shape(system, &text, scale, look);
    }
    let width = buffer
        .layout_runs()
        .map(|r| r.line_w)
        .fold(0.0f32, f32::max)
        .ceil()
        .max(1.0) as u32;
    let height = (LINE_DOTS * scale).round() as u32;
    let mut gray = GrayImage::from_pixel(width, height, Luma([255]));
    buffer.draw(system, cache, Color::rgb(0, 0, 0), |x, y, w, h, color| {
        let ink = color.a();
        for dy in 0..h {
            for dx in 0..w {
                let (px, py) = (x + dx as i32, y + dy as i32);
                if px >= 0 && py >= 0 && (px as u32) < width && (py as u32) < height {
                    let p = gray.get_pixel_mut(px as u32, py as u32);
                    p.0[0] = p.0[0].min(255 - ink);
                }
            }
        }
    });
    Some(gray)
}

/// Lays `piece` onto `canvas` at column `x`, darkest wins, clipped.
fn blit(canvas: &mut GrayImage, piece: &GrayImage, x: i64) {
    for (px, py, Luma([l])) in piece.enumerate_pixels() {
        let cx = x + i64::from(px);
        if cx >= 0 && (cx as u32) < canvas.width() && py < canvas.height() {
            let p = canvas.get_pixel_mut(cx as u32, py);
            p.0[0] = p.0[0].min(*l);
        }
    }
}

/// One past the rightmost column with ink (below 128).
fn ink_right(canvas: &GrayImage) -> u32 {
    canvas
        .enumerate_pixels()
        .filter(|(_, _, Luma([l]))| *l < 128)
        .map(|(x, _, _)| x + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_cut_at_padding_and_keep_their_columns() {
        assert_eq!(
            pieces("2 x كباب      17.00"),
            [(0, "2 x كباب".to_owned()), (14, "17.00".to_owned())]
        );
        assert_eq!(pieces("  سلام"), [(2, "سلام".to_owned())]);
        assert!(pieces("").is_empty());
    }
}

/// Tests with Debian's Noto fonts (`fonts-noto-core`). Without them they
/// are skipped, unless `KIOSK_REQUIRE_FONTS=1` (set by scripts/test.sh,
/// which installs the package).
#[cfg(test)]
mod font_tests {
    use std::sync::Arc;

    use kiosk_schemas::{Document, Receipt};
    use kiosk_testkit::escpos::{self, Command};

    use super::*;
    use crate::render::{RenderOptions, render};

    fn noto() -> Option<Arc<Fonts>> {
        kiosk_testkit::noto_fonts_installed().then(|| Arc::new(Fonts::new(default_font_paths())))
    }

    #[test]
    fn arabic_is_shaped_into_joining_forms_and_laid_out_right_to_left() {
        let Some(fonts) = noto() else { return };
        // BEH alone, and three BEHs joined: initial, medial, final forms.
        let alone = fonts.shaped("\u{628}").unwrap();
        let joined = fonts.shaped("\u{628}\u{628}\u{628}").unwrap();
        assert_eq!(joined.len(), 3);
        let ids: Vec<u16> = joined.iter().map(|(_, g)| *g).collect();
        assert!(
            ids.iter().all(|&g| g != 0 && g != alone[0].1),
            "{ids:?} vs {alone:?}"
        );
        assert_ne!(ids[0], ids[2], "initial and final forms differ");
        // Left to right on paper: the last character (byte 4) comes first.
        let order: Vec<usize> = joined.iter().map(|(at, _)| *at).collect();
        assert_eq!(order, [4, 2, 0]);
    }

    #[test]
    fn a_line_no_code_page_has_is_printed_as_a_raster_image_with_columns_kept() {
        let Some(fonts) = noto() else { return };
        let opts = RenderOptions {
            fonts: Some(fonts),
            ..RenderOptions::default()
        };
        let receipt: Receipt = serde_json::from_value(serde_json::json!({
            "header": ["Kebab"],
            "items": [{"name": "\u{643}\u{628}\u{627}\u{628}", "quantity": 2, "amount": 1700}],
            "currency": "EUR",
            "total": 1700,
        }))
        .unwrap();
        let out = render(&Document::Receipt(receipt), &opts).unwrap();
        // The preview shows the text itself.
        assert!(
            out.preview.contains("2 x \u{643}\u{628}\u{627}\u{628}"),
            "{}",
            out.preview
        );
        let commands = escpos::decode(&out.bytes);
        let rasters: Vec<(u16, u16, &Vec<u8>)> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Raster {
                    width_bytes,
                    height,
                    data,
                    ..
                } => Some((*width_bytes, *height, data)),
                _ => None,
            })
            .collect();
        // One line of 30 dots: bands of 24 and 6 rows.
        assert_eq!(rasters.iter().map(|r| r.1).collect::<Vec<_>>(), [24, 6]);
        let (width_bytes, _, data) = rasters[0];
        assert!(data.iter().any(|&b| b != 0), "the line has ink");
        // "17.00" ends flush right at 576 dots: the image is nearly the
        // full width.
        assert!(width_bytes >= 70, "{width_bytes} bytes wide");
        // No question mark was printed for the Arabic.
        let text: Vec<u8> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Text(t) => Some(t.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!text.contains(&b'?'));
    }
}

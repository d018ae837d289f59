//! Images for the paper: a PNG or JPEG becomes a [`Bitmap`] (1 bit per
//! dot, 1 = black), and a bitmap becomes ESC/POS `GS v 0` raster or `ESC *`
//! bit-image bands.
//!
//! Decoding, scaling and dithering are the `image` crate's: the image is
//! laid over white (transparent PNG pixels print as paper), turned to
//! grayscale, scaled with a Catmull-Rom filter and dithered with
//! Floyd–Steinberg (`imageops::dither` with `BiLevel`). Only the packing
//! into bytes and the `GS v 0` header are written here.
//!
//! The escpos crate's `graphics` feature is not used: its `bit_image`
//! thresholds each pixel at 128 (no dithering, so photos and gray logos
//! print as blobs), sends the whole image in one `GS v 0` command (slow
//! printers with small buffers choke on a 576 × 800 image) and only reads
//! images from a path or encoded bytes, so a logo would be decoded again
//! for every receipt.

use image::imageops::{self, BiLevel, FilterType};
use image::{DynamicImage, GrayImage, Luma};

/// Rows per `GS v 0` command. 24 rows is the band height of `ESC *` in its
/// 24-dot modes, a size every printer's receive buffer takes whole (576 ×
/// 24 dots are 1728 bytes).
pub const BAND_ROWS: u32 = 24;

/// A black-and-white picture, one bit per dot, rows packed MSB first
/// (bit 7 of the first byte is the leftmost dot), 1 = black, the last byte
/// of a row padded with white.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitmap {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for Bitmap {
    /// Only the size: the dots would flood a logged configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitmap({}x{})", self.width, self.height)
    }
}

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a readable PNG or JPEG image: {0}")]
pub struct ImageError(#[from] image::ImageError);

impl Bitmap {
    /// Decodes a PNG or JPEG and converts it for printing at `width` dots
    /// (at least 1); the height keeps the aspect ratio.
    ///
    /// # Errors
    /// [`ImageError`] when the bytes are not a PNG or JPEG the `image`
    /// crate can decode.
    pub fn from_encoded(
        bytes: &[u8],
        width: impl FnOnce(u32) -> u32,
    ) -> Result<Bitmap, ImageError> {
        let img = image::load_from_memory(bytes)?;
        let w = width(img.width()).max(1);
        Ok(Bitmap::from_image(&img, w))
    }

    /// Converts `img` to `width` dots wide (the height keeps the aspect
    /// ratio, at least one row): over white, grayscale, scaled, dithered.
    pub fn from_image(img: &DynamicImage, width: u32) -> Bitmap {
        let gray = on_white(img);
        let src_width = u64::from(gray.width().max(1));
        let height =
            ((u64::from(gray.height()) * u64::from(width) + src_width / 2) / src_width).max(1);
        let height = u32::try_from(height).unwrap_or(u32::MAX);
        let mut scaled = if (width, height) == gray.dimensions() {
            gray
        } else {
            imageops::resize(&gray, width, height, FilterType::CatmullRom)
        };
        imageops::dither(&mut scaled, &BiLevel);
        Bitmap::from_bilevel(&scaled)
    }

    /// Packs a black-and-white image (0 black, 255 white, as `BiLevel`
    /// leaves it; anything below 128 counts as black).
    pub fn from_bilevel(img: &GrayImage) -> Bitmap {
        let (width, height) = img.dimensions();
        let row_bytes = width.div_ceil(8) as usize;
        let mut data = vec![0u8; row_bytes * height as usize];
        for (x, y, Luma([l])) in img.enumerate_pixels() {
            if *l < 128 {
                data[y as usize * row_bytes + x as usize / 8] |= 0x80 >> (x % 8);
            }
        }
        Bitmap {
            width,
            height,
            data,
        }
    }

    /// Width in dots.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in dots (rows).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes per row: the width divided by 8, rounded up.
    pub fn row_bytes(&self) -> usize {
        self.width.div_ceil(8) as usize
    }

    /// The packed rows.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The image as `GS v 0 m xL xH yL yH d1..dk` commands (`1D 76 30`,
    /// mode 0 normal size), one per band of at most [`BAND_ROWS`] rows,
    /// top to bottom.
    pub fn raster_bands(&self) -> Vec<u8> {
        let row_bytes = self.row_bytes();
        let mut out = Vec::with_capacity(self.data.len() + 8 * self.bands());
        if row_bytes == 0 {
            return out;
        }
        // The widest bitmap is a printer's dot width (u16), so x fits.
        let x = u16::try_from(row_bytes).unwrap_or(u16::MAX).to_le_bytes();
        for band in self.data.chunks(row_bytes * BAND_ROWS as usize) {
            let rows = u16::try_from(band.len() / row_bytes).unwrap_or(u16::MAX);
            let y = rows.to_le_bytes();
            out.extend_from_slice(&[0x1D, b'v', b'0', 0, x[0], x[1], y[0], y[1]]);
            out.extend_from_slice(band);
        }
        out
    }

    /// The image as `ESC *` bands for printers without `GS v 0`: `ESC 3 24`
    /// (line spacing 24 dots, so bands touch), then per band of 24 rows
    /// `ESC * 33 nL nH` (24-dot double density, same dot size as raster)
    /// with 3 bytes per column, top dot in bit 7, rows below the image
    /// white, and `LF` to print it; `ESC 2` restores the default spacing.
    pub fn bit_image_bands(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 8 * self.bands() + 5);
        // The widest bitmap is a printer's dot width (u16), so n fits.
        let n = u16::try_from(self.width).unwrap_or(u16::MAX);
        out.extend_from_slice(&[0x1B, b'3', 24]);
        for band in 0..self.bands() as u32 {
            let [nl, nh] = n.to_le_bytes();
            out.extend_from_slice(&[0x1B, b'*', 33, nl, nh]);
            for x in 0..u32::from(n) {
                for k in 0..3 {
                    let mut byte = 0u8;
                    for bit in 0..8 {
                        let y = band * BAND_ROWS + k * 8 + bit;
                        if self.is_black(x, y) {
                            byte |= 0x80 >> bit;
                        }
                    }
                    out.push(byte);
                }
            }
            out.push(b'\n');
        }
        out.extend_from_slice(&[0x1B, b'2']);
        out
    }

    /// The image as `GS ( L` graphics for printers that take neither
    /// `GS v 0` nor `ESC *` well (Epson's newer models): per band of at
    /// most [`BAND_ROWS`] rows, function 112 (`GS ( L pL pH 48 112 48 1 1
    /// 49 xL xH yL yH d1..dk`: store monochrome graphics, scale 1 × 1,
    /// first color, `x` × `y` dots) and function 50 (`GS ( L 2 0 48 50`:
    /// print the buffer).
    pub fn graphics_bands(&self) -> Vec<u8> {
        let row_bytes = self.row_bytes();
        let mut out = Vec::with_capacity(self.data.len() + 24 * self.bands());
        if row_bytes == 0 {
            return out;
        }
        let x = u16::try_from(self.width).unwrap_or(u16::MAX).to_le_bytes();
        for band in self.data.chunks(row_bytes * BAND_ROWS as usize) {
            let rows = u16::try_from(band.len() / row_bytes).unwrap_or(u16::MAX);
            let y = rows.to_le_bytes();
            // 10 parameter bytes before the data; a band of 24 rows of a
            // printer's width is far below 65,535.
            let p = u16::try_from(10 + band.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes();
            out.extend_from_slice(&[0x1D, b'(', b'L', p[0], p[1], 48, 112, 48, 1, 1, 49]);
            out.extend_from_slice(&[x[0], x[1], y[0], y[1]]);
            out.extend_from_slice(band);
            out.extend_from_slice(&[0x1D, b'(', b'L', 2, 0, 48, 50]);
        }
        out
    }

    /// Whether the dot at (`x`, `y`) is black; outside the image, white.
    fn is_black(&self, x: u32, y: u32) -> bool {
        x < self.width
            && y < self.height
            && self.data[y as usize * self.row_bytes() + x as usize / 8] & (0x80 >> (x % 8)) != 0
    }

    fn bands(&self) -> usize {
        self.height.div_ceil(BAND_ROWS) as usize
    }
}

/// Grayscale with transparency laid over white paper.
fn on_white(img: &DynamicImage) -> GrayImage {
    let la = img.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [l, a] = la.get_pixel(x, y).0;
        let (l, a) = (u32::from(l), u32::from(a));
        Luma([((l * a + 255 * (255 - a)) / 255) as u8])
    })
}

//! An ESC/POS decoder for tests: the bytes a printer received become a list
//! of [`Command`]s, and [`lines`] turns those into printed lines with the
//! style in effect, for assertions.
//!
//! Written from the command definitions of the Epson *ESC/POS Application
//! Programming Guide* (command reference), not from our renderer: each
//! variant names its bytes as the reference writes them. Anything not
//! listed becomes [`Command::Unknown`] with its bytes; a command cut off by
//! the end of the stream becomes [`Command::Truncated`]. Never panics.

/// One ESC/POS command, or a run of printable bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Printable bytes (`0x20` and above) in the current code page.
    Text(Vec<u8>),
    /// `LF` (`0x0A`): print the line buffer and feed one line.
    Lf,
    /// `CR` (`0x0D`): print and carriage return (ignored by most printers
    /// with auto line feed off).
    Cr,
    /// `HT` (`0x09`): horizontal tab.
    Ht,
    /// `ESC @` (`1B 40`): initialize printer; resets every mode below.
    Init,
    /// `ESC ! n` (`1B 21 n`): select print modes. Bit 0 font B, bit 3
    /// emphasized, bit 4 double height, bit 5 double width, bit 7
    /// underline.
    PrintMode(u8),
    /// `ESC E n` (`1B 45 n`): emphasized (bold) on when bit 0 of `n` is 1.
    Bold(bool),
    /// `ESC - n` (`1B 2D n`): underline; 0 off, 1 one dot, 2 two dots
    /// (`n` = 0/1/2 or `'0'`/`'1'`/`'2'`, normalized to 0/1/2 here).
    Underline(u8),
    /// `GS B n` (`1D 42 n`): white/black reverse (invert) on when bit 0 of
    /// `n` is 1.
    Invert(bool),
    /// `ESC a n` (`1B 61 n`): justification.
    Align(Align),
    /// `GS ! n` (`1D 21 n`): character size; width = high nibble + 1,
    /// height = low nibble + 1 (each 1 to 8).
    Size {
        /// Width multiplier, 1 to 8.
        width: u8,
        /// Height multiplier, 1 to 8.
        height: u8,
    },
    /// `ESC t n` (`1B 74 n`): select character code table (code page).
    CodePage(u8),
    /// `ESC d n` (`1B 64 n`): print and feed `n` lines.
    FeedLines(u8),
    /// `ESC J n` (`1B 4A n`): print and feed `n` motion units.
    FeedUnits(u8),
    /// `GS V m` / `GS V m n` (`1D 56 m [n]`): cut the paper.
    Cut(Cut),
    /// `ESC ( A pL pH fn ...` (`1B 28 41 pL pH` then `pL + 256 pH` bytes):
    /// beeper / buzzer control. `function` is the first parameter byte,
    /// `params` the rest.
    Buzzer {
        /// First byte after `pL pH`.
        function: u8,
        /// The remaining parameter bytes.
        params: Vec<u8>,
    },
    /// `ESC B n t` (`1B 42 n t`): beep `n` times for `t` × 50 ms each, on
    /// printers with a buzzer that follow this Epson-compatible form.
    Beep {
        /// How many beeps.
        times: u8,
        /// Length of each, in units of 50 ms.
        duration: u8,
    },
    /// `ESC p m t1 t2` (`1B 70 m t1 t2`): generate pulse (cash drawer
    /// kick) on pin `m` (0/48 pin 2, 1/49 pin 5), on `t1` × 2 ms, off
    /// `t2` × 2 ms.
    Pulse {
        /// Connector pin selector as sent.
        pin: u8,
        /// On time, units of 2 ms.
        on: u8,
        /// Off time, units of 2 ms.
        off: u8,
    },
    /// `GS ( k pL pH cn fn ...` (`1D 28 6B pL pH` then `pL + 256 pH`
    /// bytes): 2D code, kept opaque. `cn` selects the symbol (48 PDF417,
    /// 49 QR Code, ...), `fn` the function (for QR: 65 model, 67 module
    /// size, 69 error correction, 80 store data, 81 print).
    Code2d {
        /// Symbol type `cn`.
        cn: u8,
        /// Function `fn`.
        function: u8,
        /// Number of bytes after `cn fn`.
        len: usize,
    },
    /// `GS k m d1..dk NUL` (m 0..=6) or `GS k m n d1..dn` (m 65..=79):
    /// print a 1-D barcode of system `m`.
    Barcode {
        /// Barcode system `m` as sent.
        system: u8,
        /// The data bytes.
        data: Vec<u8>,
    },
    /// `GS H n` (`1D 48 n`): HRI character position.
    BarcodeHri(u8),
    /// `GS h n` (`1D 68 n`): barcode height in dots.
    BarcodeHeight(u8),
    /// `GS w n` (`1D 77 n`): barcode module width.
    BarcodeWidth(u8),
    /// `GS f n` (`1D 66 n`): HRI font.
    BarcodeFont(u8),
    /// `GS v 0 m xL xH yL yH d1..dk` (`1D 76 30 ...`): print raster bit
    /// image, `width_bytes` × `height` dots' worth of data (k = x × y).
    Raster {
        /// Mode `m`: 0 normal, 1 double width, 2 double height, 3 quadruple.
        mode: u8,
        /// Bytes per row, `xL + 256 xH`.
        width_bytes: u16,
        /// Rows, `yL + 256 yH`.
        height: u16,
        /// The image data.
        data: Vec<u8>,
    },
    /// `GS ( L pL pH m fn=112 a bx by c xL xH yL yH d1..dk` (`1D 28 4C`,
    /// m 48): store raster graphics in the print buffer, `width` ×
    /// `height` dots, rows of `(width + 7) / 8` bytes MSB first.
    GraphicsStore {
        /// Tone `a`: 48 monochrome (digital), 52 multiple tone.
        tone: u8,
        /// Horizontal and vertical scale `bx`, `by` (1 or 2).
        scale: (u8, u8),
        /// Color `c`: 49 first color.
        color: u8,
        /// Width in dots, `xL + 256 xH`.
        width: u16,
        /// Height in dots, `yL + 256 yH`.
        height: u16,
        /// The image data.
        data: Vec<u8>,
    },
    /// `GS ( L 2 0 48 50` (or `fn` 2): print the graphics in the buffer.
    GraphicsPrint,
    /// Another `GS ( L` function, kept opaque: `m` and `fn`, the rest.
    Graphics {
        /// Function `fn`.
        function: u8,
        /// The parameter bytes after `m fn`.
        params: Vec<u8>,
    },
    /// `ESC * m nL nH d1..dk` (`1B 2A ...`): select bit-image mode and
    /// print one band, `width` columns of 1 byte (8-dot modes `m` 0, 1) or
    /// 3 bytes (24-dot modes `m` 32, 33) each, top dot in bit 7.
    BitImage {
        /// Mode `m`: 0/1 8-dot single/double density, 32/33 24-dot.
        mode: u8,
        /// Columns, `nL + 256 nH`.
        width: u16,
        /// The column bytes, left to right.
        data: Vec<u8>,
    },
    /// `ESC 3 n` (`1B 33 n`): line spacing `n` dots; `ESC 2` (`1B 32`):
    /// back to the default, `None`.
    LineSpacing(Option<u8>),
    /// `FS &` (`1C 26`): select Kanji (double-byte) character mode; the
    /// text after it is two bytes per character in the printer's code
    /// system (GB18030/GBK, Big5, Shift_JIS, KS X 1001).
    KanjiOn,
    /// `FS .` (`1C 2E`): cancel Kanji character mode.
    KanjiOff,
    /// `FS C n` (`1C 43 n`): select the Kanji code system; 0/48 JIS,
    /// 1/49 Shift_JIS, 2/50 Shift_JIS-2004.
    KanjiSystem(u8),
    /// `DLE EOT n` (`10 04 n`): real-time status request; 1 printer,
    /// 2 offline cause, 3 error cause, 4 roll paper sensor.
    StatusRequest(u8),
    /// A command this decoder does not know, or a lone control byte.
    Unknown(Vec<u8>),
    /// A known command whose parameters the stream ended before.
    Truncated(Vec<u8>),
}

/// Justification (`ESC a n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Align {
    /// `n` = 0 or 48.
    #[default]
    Left,
    /// `n` = 1 or 49.
    Center,
    /// `n` = 2 or 50.
    Right,
}

/// The forms of `GS V`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Function A: `m` = 0/48 full cut, 1/49 partial cut.
    Cut {
        /// True for `m` 1 or 49.
        partial: bool,
    },
    /// Function B: `m` = 65 (full) or 66 (partial), feed `n` × motion unit
    /// then cut.
    FeedCut {
        /// True for `m` 66.
        partial: bool,
        /// Feed amount `n`.
        feed: u8,
    },
    /// Functions C and D (`m` 97, 98, 103, 104) with their `n`.
    Other {
        /// `m` as sent.
        m: u8,
        /// `n` as sent.
        n: u8,
    },
}

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const DLE: u8 = 0x10;
const FS: u8 = 0x1C;

/// Decodes `bytes` into commands, in order. Consecutive printable bytes
/// form one [`Command::Text`].
pub fn decode(bytes: &[u8]) -> Vec<Command> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (cmd, used) = decode_one(&bytes[i..]);
        i += used.max(1);
        match (cmd, out.last_mut()) {
            (Command::Text(more), Some(Command::Text(run))) => run.extend(more),
            (cmd, _) => out.push(cmd),
        }
    }
    out
}

/// The command at the start of `b` (never empty) and how many bytes it took.
fn decode_one(b: &[u8]) -> (Command, usize) {
    let truncated = |b: &[u8]| (Command::Truncated(b.to_vec()), b.len());
    let arg = |k: usize| b.get(k).copied();
    match b[0] {
        0x0A => (Command::Lf, 1),
        0x0D => (Command::Cr, 1),
        0x09 => (Command::Ht, 1),
        ESC => {
            let Some(c) = arg(1) else {
                return truncated(b);
            };
            let one = |f: fn(u8) -> Command| match arg(2) {
                Some(n) => (f(n), 3),
                None => truncated(b),
            };
            match c {
                b'@' => (Command::Init, 2),
                b'!' => one(Command::PrintMode),
                b'E' => one(|n| Command::Bold(n & 1 == 1)),
                b'-' => one(|n| Command::Underline(if n >= b'0' { n - b'0' } else { n })),
                b'a' => one(|n| {
                    Command::Align(match n {
                        1 | b'1' => Align::Center,
                        2 | b'2' => Align::Right,
                        _ => Align::Left,
                    })
                }),
                b't' => one(Command::CodePage),
                b'd' => one(Command::FeedLines),
                b'J' => one(Command::FeedUnits),
                b'B' => match (arg(2), arg(3)) {
                    (Some(times), Some(duration)) => (Command::Beep { times, duration }, 4),
                    _ => truncated(b),
                },
                b'p' => match (arg(2), arg(3), arg(4)) {
                    (Some(pin), Some(on), Some(off)) => (Command::Pulse { pin, on, off }, 5),
                    _ => truncated(b),
                },
                b'(' if arg(2) == Some(b'A') => match sized(b, 3) {
                    Some((params, used)) => match params.split_first() {
                        Some((&function, rest)) => (
                            Command::Buzzer {
                                function,
                                params: rest.to_vec(),
                            },
                            used,
                        ),
                        None => (Command::Unknown(b[..used].to_vec()), used),
                    },
                    None => truncated(b),
                },
                // Other `ESC ( x pL pH ...` commands share the length form.
                b'(' => match sized(b, 3) {
                    Some((_, used)) => (Command::Unknown(b[..used].to_vec()), used),
                    None => truncated(b),
                },
                // Commands with one parameter byte this decoder does not
                // interpret: skip the byte with them so it is not text.
                b'2' => (Command::LineSpacing(None), 2),
                b'3' => one(|n| Command::LineSpacing(Some(n))),
                b'*' => bit_image(b),
                b'<' | b'=' => (Command::Unknown(b[..2].to_vec()), 2),
                b'G' | b'M' | b'R' | b'V' | b'{' | b'U' | b' ' | b'c' | b'S' => match arg(2) {
                    Some(_) => (Command::Unknown(b[..3].to_vec()), 3),
                    None => truncated(b),
                },
                _ => (Command::Unknown(b[..2].to_vec()), 2),
            }
        }
        GS => {
            let Some(c) = arg(1) else {
                return truncated(b);
            };
            let one = |f: fn(u8) -> Command| match arg(2) {
                Some(n) => (f(n), 3),
                None => truncated(b),
            };
            match c {
                b'!' => one(|n| Command::Size {
                    width: (n >> 4) + 1,
                    height: (n & 0x0F) + 1,
                }),
                b'B' => one(|n| Command::Invert(n & 1 == 1)),
                b'H' => one(Command::BarcodeHri),
                b'h' => one(Command::BarcodeHeight),
                b'w' => one(Command::BarcodeWidth),
                b'f' => one(Command::BarcodeFont),
                b'V' => match arg(2) {
                    None => truncated(b),
                    Some(m @ (0 | 1 | 48 | 49)) => (
                        Command::Cut(Cut::Cut {
                            partial: m == 1 || m == 49,
                        }),
                        3,
                    ),
                    Some(m @ (65 | 66)) => match arg(3) {
                        Some(feed) => (
                            Command::Cut(Cut::FeedCut {
                                partial: m == 66,
                                feed,
                            }),
                            4,
                        ),
                        None => truncated(b),
                    },
                    Some(m @ (97 | 98 | 103 | 104)) => match arg(3) {
                        Some(n) => (Command::Cut(Cut::Other { m, n }), 4),
                        None => truncated(b),
                    },
                    Some(_) => (Command::Unknown(b[..3].to_vec()), 3),
                },
                b'(' if arg(2) == Some(b'k') => match sized(b, 3) {
                    Some((params, used)) if params.len() >= 2 => (
                        Command::Code2d {
                            cn: params[0],
                            function: params[1],
                            len: params.len() - 2,
                        },
                        used,
                    ),
                    Some((_, used)) => (Command::Unknown(b[..used].to_vec()), used),
                    None => truncated(b),
                },
                b'(' if arg(2) == Some(b'L') => match sized(b, 3) {
                    Some((params, used)) => (graphics(params), used),
                    None => truncated(b),
                },
                b'(' => match sized(b, 3) {
                    Some((_, used)) => (Command::Unknown(b[..used].to_vec()), used),
                    None => truncated(b),
                },
                b'k' => barcode(b),
                b'v' if arg(2) == Some(b'0') => raster(b),
                _ => (Command::Unknown(b[..2].to_vec()), 2),
            }
        }
        FS => match arg(1) {
            Some(b'&') => (Command::KanjiOn, 2),
            Some(b'.') => (Command::KanjiOff, 2),
            Some(b'C') => match arg(2) {
                Some(n) => (Command::KanjiSystem(n), 3),
                None => truncated(b),
            },
            Some(_) => (Command::Unknown(b[..2].to_vec()), 2),
            None => truncated(b),
        },
        DLE if b.get(1) == Some(&0x04) => match arg(2) {
            Some(n) => (Command::StatusRequest(n), 3),
            None => truncated(b),
        },
        c if c >= 0x20 => {
            let end = b.iter().position(|&c| c < 0x20).unwrap_or(b.len());
            (Command::Text(b[..end].to_vec()), end)
        }
        _ => (Command::Unknown(vec![b[0]]), 1),
    }
}

/// For `X Y Z pL pH d1..dk` with `pL` at `at`: the `k = pL + 256 pH`
/// parameter bytes and the length of the whole command.
fn sized(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(*b.get(at)?) + 256 * usize::from(*b.get(at + 1)?);
    let start = at + 2;
    let params = b.get(start..start + len)?;
    Some((params, start + len))
}

/// The parameters of `GS ( L` (after `pL pH`): `m fn ...`.
fn graphics(params: &[u8]) -> Command {
    match params {
        [_m, 112, tone, bx, by, color, xl, xh, yl, yh, data @ ..] => {
            let width = u16::from_le_bytes([*xl, *xh]);
            let height = u16::from_le_bytes([*yl, *yh]);
            if data.len() == usize::from(width).div_ceil(8) * usize::from(height) {
                Command::GraphicsStore {
                    tone: *tone,
                    scale: (*bx, *by),
                    color: *color,
                    width,
                    height,
                    data: data.to_vec(),
                }
            } else {
                Command::Unknown(params.to_vec())
            }
        }
        [_m, 50 | 2] => Command::GraphicsPrint,
        [_m, function, rest @ ..] => Command::Graphics {
            function: *function,
            params: rest.to_vec(),
        },
        _ => Command::Unknown(params.to_vec()),
    }
}

/// `GS k m ...`: function A (m 0..=6) ends at NUL, function B (m 65..=79)
/// has a length byte.
fn barcode(b: &[u8]) -> (Command, usize) {
    let Some(&system) = b.get(2) else {
        return (Command::Truncated(b.to_vec()), b.len());
    };
    match system {
        0..=6 => match b[3..].iter().position(|&c| c == 0) {
            Some(end) => (
                Command::Barcode {
                    system,
                    data: b[3..3 + end].to_vec(),
                },
                3 + end + 1,
            ),
            None => (Command::Truncated(b.to_vec()), b.len()),
        },
        65..=79 => {
            let Some(&n) = b.get(3) else {
                return (Command::Truncated(b.to_vec()), b.len());
            };
            let end = 4 + usize::from(n);
            match b.get(4..end) {
                Some(data) => (
                    Command::Barcode {
                        system,
                        data: data.to_vec(),
                    },
                    end,
                ),
                None => (Command::Truncated(b.to_vec()), b.len()),
            }
        }
        _ => (Command::Unknown(b[..3].to_vec()), 3),
    }
}

/// `ESC * m nL nH d1..dk`, k = n (8-dot modes) or 3n (24-dot modes).
fn bit_image(b: &[u8]) -> (Command, usize) {
    let (Some(&mode), Some(&nl), Some(&nh)) = (b.get(2), b.get(3), b.get(4)) else {
        return (Command::Truncated(b.to_vec()), b.len());
    };
    let width = u16::from_le_bytes([nl, nh]);
    let k = usize::from(width) * if mode >= 32 { 3 } else { 1 };
    match b.get(5..5 + k) {
        Some(data) => (
            Command::BitImage {
                mode,
                width,
                data: data.to_vec(),
            },
            5 + k,
        ),
        None => (Command::Truncated(b.to_vec()), b.len()),
    }
}

/// `GS v 0 m xL xH yL yH d1..dk`, k = (xL + 256 xH) × (yL + 256 yH).
fn raster(b: &[u8]) -> (Command, usize) {
    let Some(head) = b.get(3..8) else {
        return (Command::Truncated(b.to_vec()), b.len());
    };
    let mode = head[0];
    let width_bytes = u16::from_le_bytes([head[1], head[2]]);
    let height = u16::from_le_bytes([head[3], head[4]]);
    let end = 8 + usize::from(width_bytes) * usize::from(height);
    match b.get(8..end) {
        Some(data) => (
            Command::Raster {
                mode,
                width_bytes,
                height,
                data: data.to_vec(),
            },
            end,
        ),
        None => (Command::Truncated(b.to_vec()), b.len()),
    }
}

/// The character style in effect for a printed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Emphasized (`ESC E`, `ESC !` bit 3).
    pub bold: bool,
    /// Underline thickness, 0 off (`ESC -`, `ESC !` bit 7).
    pub underline: u8,
    /// White on black (`GS B`).
    pub invert: bool,
    /// Width multiplier (`GS !`, `ESC !` bit 5).
    pub width: u8,
    /// Height multiplier (`GS !`, `ESC !` bit 4).
    pub height: u8,
    /// Justification (`ESC a`).
    pub align: Align,
}

impl Default for Style {
    /// The state after `ESC @`.
    fn default() -> Self {
        Style {
            bold: false,
            underline: 0,
            invert: false,
            width: 1,
            height: 1,
            align: Align::Left,
        }
    }
}

/// One printed line: its text (bytes as Latin-1, so ASCII reads as is) and
/// the style in effect when its first character was received (or at its
/// `LF` for an empty line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StyledLine {
    /// The text, without the `LF`.
    pub text: String,
    /// The style in effect.
    pub style: Style,
}

/// The lines `commands` print: text up to each `LF` or `ESC d n` (which
/// prints the buffer and feeds `n` lines: `n - 1` empty lines after a
/// text, `n` without one); a final unterminated line counts too; with
/// the style in effect. Style changes in the middle of a line are not
/// tracked: tests should keep one style per line, as our renderer does.
pub fn lines(commands: &[Command]) -> Vec<StyledLine> {
    let mut out = Vec::new();
    let mut style = Style::default();
    let mut current: Option<StyledLine> = None;
    let flush = |current: &mut Option<StyledLine>, out: &mut Vec<StyledLine>, style: Style| {
        out.push(current.take().unwrap_or(StyledLine {
            text: String::new(),
            style,
        }));
    };
    for cmd in commands {
        match cmd {
            Command::Text(bytes) => {
                let line = current.get_or_insert_with(|| StyledLine {
                    text: String::new(),
                    style,
                });
                line.text.extend(bytes.iter().map(|&b| char::from(b)));
            }
            Command::Lf => flush(&mut current, &mut out, style),
            // Prints the buffer, then feeds n lines: the first ends the
            // buffered line, the others are empty lines.
            Command::FeedLines(n) => {
                let blanks = if current.is_some() {
                    flush(&mut current, &mut out, style);
                    n.saturating_sub(1)
                } else {
                    *n
                };
                for _ in 0..blanks {
                    flush(&mut current, &mut out, style);
                }
            }
            Command::Init => style = Style::default(),
            Command::PrintMode(n) => {
                style.bold = n & 0x08 != 0;
                style.height = if n & 0x10 != 0 { 2 } else { 1 };
                style.width = if n & 0x20 != 0 { 2 } else { 1 };
                style.underline = if n & 0x80 != 0 { 1 } else { 0 };
            }
            Command::Bold(on) => style.bold = *on,
            Command::Underline(n) => style.underline = *n,
            Command::Invert(on) => style.invert = *on,
            Command::Align(a) => style.align = *a,
            Command::Size { width, height } => {
                style.width = *width;
                style.height = *height;
            }
            _ => {}
        }
    }
    if let Some(line) = current {
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_runs_line_feeds_and_init() {
        let cmds = decode(b"\x1b@Hello\nWorld\r\n\tX");
        assert_eq!(
            cmds,
            vec![
                Command::Init,
                Command::Text(b"Hello".to_vec()),
                Command::Lf,
                Command::Text(b"World".to_vec()),
                Command::Cr,
                Command::Lf,
                Command::Ht,
                Command::Text(b"X".to_vec()),
            ]
        );
    }

    #[test]
    fn style_commands() {
        let cmds = decode(&[
            0x1B, 0x21, 0x38, // ESC ! : bold, double height and width
            0x1B, 0x45, 0x01, // ESC E 1
            0x1B, 0x45, 0x00, // ESC E 0
            0x1B, 0x2D, 0x02, // ESC - 2
            0x1B, 0x2D, 0x31, // ESC - '1'
            0x1D, 0x42, 0x01, // GS B 1
            0x1B, 0x61, 0x01, // ESC a 1
            0x1B, 0x61, 0x32, // ESC a '2'
            0x1D, 0x21, 0x11, // GS ! 0x11: 2 x 2
            0x1D, 0x21, 0x70, // GS ! 0x70: 8 wide, 1 high
            0x1B, 0x74, 0x10, // ESC t 16
            0x1B, 0x64, 0x03, // ESC d 3
        ]);
        assert_eq!(
            cmds,
            vec![
                Command::PrintMode(0x38),
                Command::Bold(true),
                Command::Bold(false),
                Command::Underline(2),
                Command::Underline(1),
                Command::Invert(true),
                Command::Align(Align::Center),
                Command::Align(Align::Right),
                Command::Size {
                    width: 2,
                    height: 2
                },
                Command::Size {
                    width: 8,
                    height: 1
                },
                Command::CodePage(16),
                Command::FeedLines(3),
            ]
        );
    }

    #[test]
    fn every_cut_form() {
        let cmds = decode(&[
            0x1D, 0x56, 0x00, 0x1D, 0x56, 0x01, 0x1D, 0x56, 0x30, 0x1D, 0x56, 0x31, 0x1D, 0x56,
            0x41, 0x05, 0x1D, 0x56, 0x42, 0x00,
        ]);
        assert_eq!(
            cmds,
            vec![
                Command::Cut(Cut::Cut { partial: false }),
                Command::Cut(Cut::Cut { partial: true }),
                Command::Cut(Cut::Cut { partial: false }),
                Command::Cut(Cut::Cut { partial: true }),
                Command::Cut(Cut::FeedCut {
                    partial: false,
                    feed: 5
                }),
                Command::Cut(Cut::FeedCut {
                    partial: true,
                    feed: 0
                }),
            ]
        );
    }

    #[test]
    fn beeps_pulse_and_status() {
        // ESC ( A pL=4 pH=0 then n=48 fn=... : 4 parameter bytes.
        let cmds = decode(&[
            0x1B, 0x28, 0x41, 0x04, 0x00, 0x30, 0x33, 0x02, 0x05, // ESC ( A
            0x1B, 0x42, 0x03, 0x02, // ESC B 3 2
            0x1B, 0x70, 0x00, 0x19, 0xFA, // ESC p 0 25 250
            0x10, 0x04, 0x01, // DLE EOT 1
        ]);
        assert_eq!(
            cmds,
            vec![
                Command::Buzzer {
                    function: 0x30,
                    params: vec![0x33, 0x02, 0x05]
                },
                Command::Beep {
                    times: 3,
                    duration: 2
                },
                Command::Pulse {
                    pin: 0,
                    on: 25,
                    off: 250
                },
                Command::StatusRequest(1),
            ]
        );
    }

    #[test]
    fn graphics_store_and_print() {
        // 9 × 2 dots: 2 bytes a row; pL = 10 + 4.
        let cmds = decode(&[
            0x1D, 0x28, 0x4C, 14, 0, 48, 112, 48, 1, 1, 49, 9, 0, 2, 0, 0xFF, 0x80, 0x01,
            0x00, //
            0x1D, 0x28, 0x4C, 2, 0, 48, 50, //
            0x1D, 0x28, 0x4C, 2, 0, 48, 65,
        ]);
        assert_eq!(
            cmds,
            vec![
                Command::GraphicsStore {
                    tone: 48,
                    scale: (1, 1),
                    color: 49,
                    width: 9,
                    height: 2,
                    data: vec![0xFF, 0x80, 0x01, 0x00],
                },
                Command::GraphicsPrint,
                Command::Graphics {
                    function: 65,
                    params: vec![],
                },
            ]
        );
    }

    #[test]
    fn kanji_mode_and_code_pages() {
        // ESC t 17, 0x8F (CP866 П), FS C 1, FS & B9 BA FS ., FS truncated.
        let cmds = decode(&[
            0x1B, 0x74, 0x11, 0x8F, 0x1C, 0x43, 0x01, 0x1C, 0x26, 0xB9, 0xBA, 0x1C, 0x2E, 0x1C,
        ]);
        assert_eq!(
            cmds,
            vec![
                Command::CodePage(17),
                Command::Text(vec![0x8F]),
                Command::KanjiSystem(1),
                Command::KanjiOn,
                Command::Text(vec![0xB9, 0xBA]),
                Command::KanjiOff,
                Command::Truncated(vec![0x1C]),
            ]
        );
    }

    #[test]
    fn bit_image_and_line_spacing() {
        let mut bytes = vec![0x1B, b'3', 24, 0x1B, b'*', 33, 2, 0];
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        bytes.extend_from_slice(&[
            0x0A, 0x1B, b'2', 0x1B, b'*', 0, 1, 0, 0xFF, 0x1B, b'*', 33, 1,
        ]);
        assert_eq!(
            decode(&bytes),
            vec![
                Command::LineSpacing(Some(24)),
                Command::BitImage {
                    mode: 33,
                    width: 2,
                    data: vec![1, 2, 3, 4, 5, 6]
                },
                Command::Lf,
                Command::LineSpacing(None),
                Command::BitImage {
                    mode: 0,
                    width: 1,
                    data: vec![0xFF]
                },
                Command::Truncated(vec![0x1B, b'*', 33, 1]),
            ]
        );
    }

    #[test]
    fn codes_and_raster() {
        let mut bytes = vec![
            // GS ( k pL=5 pH=0 cn=49 fn=80 m=48 "ab": store QR data
            0x1D, 0x28, 0x6B, 0x05, 0x00, 0x31, 0x50, 0x30, b'a',
            b'b',
            // GS k 2 (EAN13, function A) digits NUL
        ];
        bytes.extend([0x1D, 0x6B, 0x02]);
        bytes.extend(b"400638133393\0");
        // GS k 73 (CODE128, function B) n=3
        bytes.extend([0x1D, 0x6B, 0x49, 0x03, b'A', b'B', b'C']);
        // GS v 0 m=0 x=2 y=2 + 4 bytes
        bytes.extend([0x1D, 0x76, 0x30, 0x00, 0x02, 0x00, 0x02, 0x00, 1, 2, 3, 4]);
        bytes.extend(b"ok");
        assert_eq!(
            decode(&bytes),
            vec![
                Command::Code2d {
                    cn: 0x31,
                    function: 0x50,
                    len: 3
                },
                Command::Barcode {
                    system: 2,
                    data: b"400638133393".to_vec()
                },
                Command::Barcode {
                    system: 73,
                    data: b"ABC".to_vec()
                },
                Command::Raster {
                    mode: 0,
                    width_bytes: 2,
                    height: 2,
                    data: vec![1, 2, 3, 4]
                },
                Command::Text(b"ok".to_vec()),
            ]
        );
    }

    #[test]
    fn unknown_and_truncated_do_not_panic() {
        assert_eq!(
            decode(&[0x1B, 0x7E, b'x', 0x07]),
            vec![
                Command::Unknown(vec![0x1B, 0x7E]),
                Command::Text(b"x".to_vec()),
                Command::Unknown(vec![0x07]),
            ]
        );
        assert_eq!(
            decode(&[0x1D, 0x28, 0x6B, 0x10, 0x00, 0x31]),
            vec![Command::Truncated(vec![0x1D, 0x28, 0x6B, 0x10, 0x00, 0x31])]
        );
        assert_eq!(decode(&[0x1B]), vec![Command::Truncated(vec![0x1B])]);
        assert_eq!(
            decode(&[0x1D, 0x76, 0x30, 0, 0xFF, 0xFF, 0xFF, 0xFF]),
            vec![Command::Truncated(vec![
                0x1D, 0x76, 0x30, 0, 0xFF, 0xFF, 0xFF, 0xFF
            ])]
        );
        // Every prefix of every test stream decodes without panicking.
        let all: Vec<u8> = (0..=255u8).chain([0x1B, 0x28, 0x41, 0x01]).collect();
        for end in 0..all.len() {
            let _ = decode(&all[..end]);
        }
    }

    #[test]
    fn lines_carry_the_style_in_effect() {
        let bytes = [
            &b"\x1b@\x1ba\x01\x1d!\x11\x1bE\x01TABLE 12\n"[..],
            b"\x1ba\x00\x1d!\x00\x1bE\x00plain\n",
            b"\x1dB\x01\x1b-\x01inv\n",
            b"\n",
            b"\x1b@fed\x1bd\x02\x1bd\x01",
            b"\x1b!\x38big",
        ]
        .concat();
        let got = lines(&decode(&bytes));
        let s = |bold, underline, invert, width, height, align| Style {
            bold,
            underline,
            invert,
            width,
            height,
            align,
        };
        assert_eq!(
            got,
            vec![
                StyledLine {
                    text: "TABLE 12".into(),
                    style: s(true, 0, false, 2, 2, Align::Center)
                },
                StyledLine {
                    text: "plain".into(),
                    style: s(false, 0, false, 1, 1, Align::Left)
                },
                StyledLine {
                    text: "inv".into(),
                    style: s(false, 1, true, 1, 1, Align::Left)
                },
                StyledLine {
                    text: String::new(),
                    style: s(false, 1, true, 1, 1, Align::Left)
                },
                StyledLine {
                    text: "fed".into(),
                    style: Style::default()
                },
                StyledLine {
                    text: String::new(),
                    style: Style::default()
                },
                StyledLine {
                    text: String::new(),
                    style: Style::default()
                },
                StyledLine {
                    text: "big".into(),
                    style: s(true, 0, false, 2, 2, Align::Left)
                },
            ]
        );
    }
}

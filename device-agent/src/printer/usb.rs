//! Finding the USB printers attached, for `kiosk-agent printers`: the
//! `usblp` device nodes `/dev/usb/lp*` and the IEEE 1284 device id the
//! kernel read from each printer, in sysfs at
//! `/sys/class/usbmisc/lpN/device/ieee1284_id`
//! (`MFG:EPSON;CMD:ESCPOS;MDL:TM-T20II;CLS:PRINTER;`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kiosk_schemas::{PaperStatus, PrinterStatus};

/// Where the listing looks; [`Roots::default`] is the real system.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The device directory, `/dev/usb`.
    pub dev_usb: PathBuf,
    /// The sysfs class directory, `/sys/class/usbmisc`.
    pub sys_usbmisc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            dev_usb: PathBuf::from("/dev/usb"),
            sys_usbmisc: PathBuf::from("/sys/class/usbmisc"),
        }
    }
}

/// The fields of an IEEE 1284 device id a technician needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceId {
    /// `MFG` (or `MANUFACTURER`), e.g. `EPSON`.
    pub manufacturer: Option<String>,
    /// `MDL` (or `MODEL`), e.g. `TM-T20II`.
    pub model: Option<String>,
    /// `CMD` (or `COMMAND SET`), e.g. `ESCPOS`.
    pub command_set: Option<String>,
}

impl DeviceId {
    /// Parses `KEY:value;KEY:value;...` (IEEE 1284-2000, 7.6); keys are
    /// matched without case, unknown keys and malformed pieces ignored.
    pub fn parse(id: &str) -> Self {
        let mut parsed = DeviceId::default();
        for piece in id.split(';') {
            let Some((key, value)) = piece.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let slot = match key.trim().to_ascii_uppercase().as_str() {
                "MFG" | "MANUFACTURER" => &mut parsed.manufacturer,
                "MDL" | "MODEL" => &mut parsed.model,
                "CMD" | "COMMAND SET" => &mut parsed.command_set,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.to_owned());
        }
        parsed
    }
}

/// One attached USB printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbPrinter {
    /// `lp0`, ...
    pub name: String,
    /// The device node, `/dev/usb/lp0`.
    pub node: PathBuf,
    /// Whether the node exists (sysfs knows the printer but udev has not
    /// made the node, or it was renamed).
    pub node_exists: bool,
    /// The parsed device id; `None` when sysfs has none.
    pub id: Option<DeviceId>,
}

/// The USB printers under `roots`: every `lpN` in the sysfs class or in
/// the device directory, sorted by number. Unreadable directories give
/// an empty list.
pub fn attached(roots: &Roots) -> Vec<UsbPrinter> {
    let mut names: Vec<(u32, String)> = Vec::new();
    for dir in [&roots.sys_usbmisc, &roots.dev_usb] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix("lp").and_then(|n| n.parse::<u32>().ok())
                && !names.iter().any(|(m, _)| *m == n)
            {
                names.push((n, name));
            }
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|(_, name)| {
            let node = roots.dev_usb.join(&name);
            let id = std::fs::read_to_string(
                roots
                    .sys_usbmisc
                    .join(&name)
                    .join("device")
                    .join("ieee1284_id"),
            )
            .ok()
            .map(|s| DeviceId::parse(&s));
            UsbPrinter {
                node_exists: node.exists(),
                name,
                node,
                id,
            }
        })
        .collect()
}

/// A configured printer and what it said when asked once.
#[derive(Debug, Clone)]
pub struct Configured {
    /// Logical name, `receipt`.
    pub name: String,
    /// The driver's description, `device /dev/usb/lp0`.
    pub target: String,
    /// Its status.
    pub status: PrinterStatus,
}

/// The text `kiosk-agent printers` prints: the attached USB printers, then
/// (when a config was given) the configured printers with their status.
pub fn listing(
    roots: &Roots,
    attached: &[UsbPrinter],
    configured: Option<&[Configured]>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "USB printers ({}/lp*):", roots.dev_usb.display());
    if attached.is_empty() {
        let _ = writeln!(out, "  none found");
    }
    for p in attached {
        let id = p.id.clone().unwrap_or_default();
        let field = |f: &Option<String>| f.clone().unwrap_or_else(|| "?".to_owned());
        let _ = write!(
            out,
            "  {}  MFG:{}  MDL:{}  CMD:{}",
            p.node.display(),
            field(&id.manufacturer),
            field(&id.model),
            field(&id.command_set)
        );
        if p.id.is_none() {
            let _ = write!(out, "  (no IEEE 1284 id in sysfs)");
        }
        if !p.node_exists {
            let _ = write!(out, "  (device node missing)");
        }
        let _ = writeln!(out);
    }
    if let Some(configured) = configured {
        let _ = writeln!(out, "Configured printers:");
        if configured.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for c in configured {
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                c.name,
                c.target,
                describe_status(&c.status)
            );
        }
    }
    out
}

/// `ready, online, paper ok` or `not ready: <why>, paper unknown`.
fn describe_status(status: &PrinterStatus) -> String {
    let paper = match status.paper {
        PaperStatus::Ok => "ok",
        PaperStatus::NearEnd => "near end",
        PaperStatus::Out => "out",
        PaperStatus::Unknown => "unknown",
    };
    let mut text = if status.ready {
        "ready".to_owned()
    } else {
        match &status.error {
            Some(e) => format!("not ready: {e}"),
            None => "not ready".to_owned(),
        }
    };
    text.push_str(if status.online {
        ", online"
    } else {
        ", offline"
    });
    if status.cover_open {
        text.push_str(", cover open");
    }
    text.push_str(", paper ");
    text.push_str(paper);
    text
}

/// The whole `kiosk-agent printers` report: [`attached`] under `roots`,
/// and each printer of `config` asked for its status once (blocks up to
/// about the printer's `timeout` per step on tcp).
pub fn survey(roots: &Roots, config: Option<&crate::AgentConfig>) -> String {
    let found = attached(roots);
    let configured: Option<Vec<Configured>> = config.map(|config| {
        config
            .printers
            .iter()
            .map(|(name, printer)| {
                let mut driver = super::open(printer);
                Configured {
                    name: name.clone(),
                    target: driver.describe(),
                    status: driver.status(),
                }
            })
            .collect()
    });
    listing(roots, &found, configured.as_deref())
}

/// Whether `path` is one of the attached printers' nodes (for a hint).
pub fn is_attached(attached: &[UsbPrinter], path: &Path) -> bool {
    attached.iter().any(|p| p.node == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::PrinterDriver as _;
    use crate::printer::device::DeviceDriver;

    #[test]
    fn device_ids_parse_short_and_long_keys() {
        let id = DeviceId::parse("MFG:EPSON;CMD:ESCPOS;MDL:TM-T20II;CLS:PRINTER;DES:TM-T20II;\n");
        assert_eq!(
            id,
            DeviceId {
                manufacturer: Some("EPSON".into()),
                model: Some("TM-T20II".into()),
                command_set: Some("ESCPOS".into()),
            }
        );
        let id = DeviceId::parse("MANUFACTURER:Star;MODEL:TSP100;junk;CMD:;");
        assert_eq!(id.manufacturer.as_deref(), Some("Star"));
        assert_eq!(id.model.as_deref(), Some("TSP100"));
        assert_eq!(id.command_set, None);
    }

    #[test]
    fn lists_a_fake_sysfs_tree_and_configured_printers() {
        let root = tempfile::tempdir().unwrap();
        let roots = Roots {
            dev_usb: root.path().join("dev/usb"),
            sys_usbmisc: root.path().join("sys/class/usbmisc"),
        };
        for (lp, id) in [
            (
                "lp0",
                Some("MFG:EPSON;CMD:ESCPOS;MDL:TM-T20II;CLS:PRINTER;"),
            ),
            ("lp1", None),
        ] {
            let dev = roots.sys_usbmisc.join(lp).join("device");
            std::fs::create_dir_all(&dev).unwrap();
            if let Some(id) = id {
                std::fs::write(dev.join("ieee1284_id"), id).unwrap();
            }
        }
        std::fs::create_dir_all(&roots.dev_usb).unwrap();
        std::fs::write(roots.dev_usb.join("lp0"), b"").unwrap();
        // Not a printer node.
        std::fs::write(roots.dev_usb.join("hiddev0"), b"").unwrap();

        let found = attached(&roots);
        assert_eq!(found.len(), 2);
        assert!(is_attached(&found, &roots.dev_usb.join("lp0")));

        let lp0 = roots.dev_usb.join("lp0");
        let configured = vec![Configured {
            name: "receipt".into(),
            target: DeviceDriver::new(&lp0).describe(),
            status: DeviceDriver::new(&lp0).status(),
        }];
        let text = listing(&roots, &found, Some(&configured));
        let dev = roots.dev_usb.display();
        assert_eq!(
            text,
            format!(
                "USB printers ({dev}/lp*):\n\
                 \x20 {dev}/lp0  MFG:EPSON  MDL:TM-T20II  CMD:ESCPOS\n\
                 \x20 {dev}/lp1  MFG:?  MDL:?  CMD:?  (no IEEE 1284 id in sysfs)  (device node missing)\n\
                 Configured printers:\n\
                 \x20 receipt  device {dev}/lp0  ready, online, paper unknown\n"
            )
        );

        let empty = Roots {
            dev_usb: root.path().join("none"),
            sys_usbmisc: root.path().join("none"),
        };
        assert_eq!(
            listing(&empty, &attached(&empty), None),
            format!(
                "USB printers ({}/lp*):\n  none found\n",
                empty.dev_usb.display()
            )
        );
    }
}

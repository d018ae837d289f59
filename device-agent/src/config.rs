//! Agent configuration: a TOML file, then environment variables
//! `KIOSK_AGENT__<SECTION>__<KEY>` (e.g. `KIOSK_AGENT__BROKER__URL`,
//! `KIOSK_AGENT__PRINTERS__RECEIPT__ADDRESS`), then validation into
//! [`AgentConfig`] with errors that name the bad key.
//!
//! Values are parsed into their types while loading (`broker.url` is an
//! [`MqttUrl`], `printers.<name>.code_page` a [`CodePage`]) and the
//! combinations of keys are checked once, by [`AgentConfig::load`] and
//! [`AgentConfig::from_toml`]: the rest of the agent uses the result as it is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiosk_mqtt::{ClientDefaults, ClientSection};
use kiosk_schemas::print::validate_printer_name;
use kiosk_schemas::settings::invalid;
pub use kiosk_schemas::settings::{Checked, ConfigError};
use kiosk_schemas::{Currency, KioskId, MqttUrl};
use serde::Deserialize;

use crate::render::charset::{Charset, Cjk};
use crate::render::fallback::{Fonts, default_font_paths};
use crate::render::profile::{self, ProfileFacts};
use crate::render::{Bitmap, CodePage, ImageMode, RenderOptions, default_dots};

/// Prefix of environment overrides; `__` separates levels.
pub const ENV_PREFIX: &str = "KIOSK_AGENT";

/// The whole agent configuration, as [`AgentConfig::load`] returns it:
/// parsed and checked.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentConfig {
    /// This kiosk's id: MQTT client id, default username, `<id>` in topics.
    pub kiosk_id: KioskId,
    /// MQTT connection.
    pub broker: BrokerConfig,
    /// Durable inbox/outbox.
    pub store: StoreConfig,
    /// Job handling.
    #[serde(default)]
    pub print: PrintConfig,
    /// Logical printers by name (`receipt`, `kitchen`, ...).
    #[serde(default)]
    pub printers: BTreeMap<String, PrinterConfig>,
    /// The cash acceptor, if the kiosk has one.
    #[serde(default)]
    pub cash: Option<CashConfig>,
    /// The retained `kiosk/<id>/status`.
    #[serde(default)]
    pub status: StatusConfig,
}

/// `[status]`: the retained `kiosk/<id>/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusConfig {
    /// The status is republished at least this often (and at once on every
    /// change); it says so in `heartbeat_ms`, and the gateway marks the
    /// kiosk offline after three heartbeats without a message, which covers
    /// a will that is never published (a broker node that died, a link cut
    /// silently). Default 30 s.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            heartbeat: default_heartbeat(),
        }
    }
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}

/// `[broker]`: how the agent reaches the MQTT broker.
#[derive(Debug, Clone, Deserialize)]
pub struct BrokerConfig {
    /// `mqtt://host:port` (plain TCP, default port 1883) or
    /// `mqtts://host:port` (TLS, default port 8883; the certificate must
    /// match `host`). Parsed when the configuration is loaded. Required
    /// unless `broker.urls` lists the brokers of a cluster instead.
    #[serde(default)]
    pub url: Option<MqttUrl>,
    /// `username` (default the kiosk id), `password` (the kiosk's
    /// generated secret), `keep_alive` (default 30 s), `reconnect_min`
    /// (default 500 ms), `reconnect_max` (default 30 s), `ca_file`,
    /// `client_cert`, `client_key`: the keys every MQTT client of the
    /// fleet reads the same way ([`ClientSection`]).
    #[serde(flatten)]
    pub client: ClientSection,
}

/// `[store]`: the sled directory holding the inbox and outbox.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreConfig {
    /// Directory of the sled database; created if missing.
    pub path: PathBuf,
    /// How long finished jobs are remembered for deduplication. Must exceed
    /// the longest job lifetime (gateway `delivery.default_expires_in`).
    /// Default 7 days.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
}

/// `[print]`: job handling.
#[derive(Debug, Clone, Deserialize)]
pub struct PrintConfig {
    /// Largest accepted print job payload, in bytes; larger ones are
    /// answered `failed`. Default 512 KiB.
    #[serde(default = "default_max_job_bytes")]
    pub max_job_bytes: usize,
    /// How often a waiting job re-checks a not-ready printer, and how often
    /// printer status is polled for the kiosk status. Default 5 s.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
}

impl Default for PrintConfig {
    fn default() -> Self {
        PrintConfig {
            max_job_bytes: default_max_job_bytes(),
            status_interval: default_status_interval(),
        }
    }
}

/// Which driver talks to a printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// A character device or file (`/dev/usb/lp0`); one-way, status unknown.
    Device,
    /// Raw TCP, port 9100 by default; two-way, status read with `DLE EOT`.
    Tcp,
    /// A CUPS queue (`queue`, on `server`), printed raw over IPP; ready
    /// when the queue accepts jobs and is not stopped, paper unknown.
    Cups,
}

/// `[printers.<name>]`: one logical printer.
#[derive(Debug, Clone, Deserialize)]
pub struct PrinterConfig {
    /// `device`, `tcp` or `cups`.
    pub driver: DriverKind,
    /// Device path for `device`; `host:port` (port defaults to 9100) for
    /// `tcp`. Required for those two; not used by `cups` (an address
    /// there fails the load: the queue is `queue`).
    #[serde(default)]
    pub address: String,
    /// `cups` only, and required there: the CUPS queue (destination)
    /// name, as `lp -d` takes it; a raw queue (one without a PPD or
    /// filter), so the ESC/POS bytes reach the printer unchanged.
    #[serde(default)]
    pub queue: Option<String>,
    /// `cups` only: the CUPS server, `host:port` or `host` (port 631).
    /// Default: `CUPS_SERVER` if it names a host, else `localhost:631`
    /// (the agent speaks IPP over TCP, not the local socket).
    #[serde(default)]
    pub server: Option<String>,
    /// The printer's model in the ESC/POS printer database (`TM-T88V`,
    /// `TM-T20II`, `SRP-S300`, `default`, `simple`, ...; `kiosk-agent
    /// printers --profiles` lists them): its code pages with their `ESC t`
    /// numbers, and the defaults of `width`, `dots` and `image_mode`. An
    /// unknown name fails the load. Default `default` (Epson's numbering
    /// of code pages; width, dots and image mode the agent's defaults).
    #[serde(default)]
    pub profile: Option<String>,
    /// Characters per line in font A, 16 to 96: 32 on 58 mm paper, 48 (or
    /// 42 on 180 dpi printers) on 80 mm. Default: the profile's, else 48.
    #[serde(default)]
    pub width: Option<u8>,
    /// The code page selected at the start of each document (`ESC t`),
    /// by the `escpos` crate's name or the database's (`PC437` or `CP437`,
    /// `PC858`, `PC866`, `WPC1252`/`CP1252`, ...; see
    /// [`crate::render::page_code`]). Other code pages of the profile are
    /// switched to as text needs them. An unknown name, or one the profile
    /// lacks, fails the load. Default `PC437`, or the profile's first page.
    #[serde(default)]
    pub code_page: Option<CodePage>,
    /// The printer's double-byte mode for CJK text (`FS &`): `gb18030`,
    /// `big5`, `shift_jis` or `euc_kr`. The printer database does not say
    /// which printers have one, so it is set here. Default none: CJK text
    /// is drawn with the fonts.
    #[serde(default)]
    pub cjk: Option<Cjk>,
    /// A font file or a directory of fonts, for lines no code page of the
    /// printer can show (Arabic, Thai on a Western printer, emoji): they are
    /// drawn and printed as images. Default: Debian's Noto and DejaVu
    /// directories that exist (`fonts-noto-core`); with none, such
    /// characters print as `?`. A path that does not exist fails the load.
    #[serde(default)]
    pub font: Option<PathBuf>,
    /// Connect/read/write timeout for `tcp`; for `cups` the bound on each
    /// IPP request and on how long a job may stay in one state (pending,
    /// processing) before it is cancelled — set it above the time the
    /// longest job takes to print. Default 5 s.
    #[serde(default = "default_printer_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Printable width in dots, at least 8: images are scaled to at most
    /// this. Default 576 for 48 columns (80 mm paper at 203 dpi), 384 for
    /// 32 (58 mm).
    #[serde(default)]
    pub dots: Option<u16>,
    /// A PNG or JPEG printed centered at the top of receipts that ask for
    /// it (`"logo": true`), at its own width capped at `dots`. Read,
    /// dithered and kept in memory when the configuration is loaded; an
    /// unreadable file fails the load naming `printers.<name>.logo`.
    #[serde(default)]
    pub logo: Option<PathBuf>,
    /// How images are sent, in bands of 24 rows: `raster` (`GS v 0`),
    /// `bit_image` (`ESC *` 24-dot double density, for printers without
    /// `GS v 0`) or `graphics` (`GS ( L` store and print, Epson's newer
    /// command). Default: what the profile lists, raster first, then
    /// `bit_image`, then `graphics`; `raster` without a profile.
    #[serde(default)]
    pub image_mode: Option<ImageMode>,
    /// The logo, converted, once the configuration is checked.
    #[serde(skip)]
    pub logo_bitmap: Option<Arc<Bitmap>>,
    /// The character tables, built once the configuration is checked.
    #[serde(skip)]
    pub charset: Option<Arc<Charset>>,
    /// The fallback fonts, once the configuration is checked (shared by
    /// printers with the same `font`).
    #[serde(skip)]
    pub fonts: Option<Arc<Fonts>>,
}

impl PrinterConfig {
    /// The profile's facts (`profile`, or `default`).
    pub fn profile_facts(&self) -> ProfileFacts {
        let name = self.profile.as_deref().unwrap_or(profile::DEFAULT_PROFILE);
        profile::profile(name)
            .map(profile::facts)
            .unwrap_or_else(|_| {
                profile::facts(profile::profile(profile::DEFAULT_PROFILE).expect("default profile"))
            })
    }

    /// `width`, or the profile's columns (only with `profile` set), or 48.
    pub fn columns(&self) -> u8 {
        self.width
            .or_else(|| self.profile.as_ref().and(self.profile_facts().columns))
            .unwrap_or(48)
    }

    /// `dots`, or the profile's (only with `profile` set), or the default
    /// for the columns.
    pub fn dots(&self) -> u16 {
        self.dots
            .or_else(|| self.profile.as_ref().and(self.profile_facts().dots))
            .unwrap_or_else(|| default_dots(self.columns()))
    }

    /// `image_mode`, or what the profile has: raster, else `ESC *`.
    pub fn image_mode(&self) -> ImageMode {
        self.image_mode
            .unwrap_or_else(|| match self.profile_facts().image_mode {
                Some(ImageMode::BitImage) => ImageMode::BitImage,
                _ => ImageMode::Raster,
            })
    }

    /// How documents are laid out for this printer: its columns, its code
    /// pages and fonts, images at most `dots` wide, the converted logo, and
    /// from its profile whether it draws QR codes itself and how it cuts.
    pub fn render_options(&self) -> RenderOptions {
        let facts = self.profile_facts();
        let opts = match &self.charset {
            Some(charset) => RenderOptions::with_charset(self.columns(), Arc::clone(charset)),
            // Not checked yet (tests): the `default` profile's pages.
            None => RenderOptions::new(self.columns(), CodePage::PC437),
        };
        RenderOptions {
            dots: self.dots(),
            logo: self.logo_bitmap.clone(),
            image_mode: self.image_mode(),
            fonts: self.fonts.clone(),
            native_qr: facts.qr,
            cutter: facts.cut,
            ..opts
        }
    }

    /// Builds the character tables: the profile's pages, starting in
    /// `code_page`.
    fn build_charset(&self) -> Result<Charset, String> {
        let name = self.profile.as_deref().unwrap_or(profile::DEFAULT_PROFILE);
        let p = profile::profile(name).map_err(|e| e.to_string())?;
        let pages = profile::pages(p);
        if pages.is_empty() {
            return Err(format!("profile {name} has no code page this agent knows"));
        }
        let start = match self.code_page {
            Some(page) => {
                let wanted = profile::database_name(page.page_code());
                if !pages.iter().any(|p| p.name == wanted) {
                    let have: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
                    return Err(format!(
                        "profile {name} has no {wanted}; it has {}",
                        have.join(", ")
                    ));
                }
                wanted
            }
            None => "CP437".to_owned(),
        };
        Ok(Charset::new(pages, &start, self.cjk))
    }
}

/// `[cash]`: the serial cash acceptor.
#[derive(Debug, Clone, Deserialize)]
pub struct CashConfig {
    /// Serial port, e.g. `/dev/ttyUSB0` or `/dev/kiosk-cash`.
    pub port: String,
    /// Baud rate. Default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Currency of the acceptor's amounts.
    pub currency: Currency,
    /// After opening the port (which resets an Arduino Uno), how long to
    /// wait for its `READY` line before sending commands anyway. Default 2 s.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// How often to try to reopen a port that is gone. Default 3 s.
    #[serde(default = "default_reopen", with = "humantime_serde")]
    pub reopen_interval: Duration,
    /// How often unacknowledged credits are sent again. Default 5 s.
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Largest credit accepted from the acceptor, in minor units; a larger
    /// value is treated as a garbled line. Default 100000 (1,000.00 EUR).
    #[serde(default = "default_max_credit")]
    pub max_credit: i64,
}

fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_max_job_bytes() -> usize {
    512 * 1024
}
fn default_status_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_printer_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_baud() -> u32 {
    9600
}
fn default_settle() -> Duration {
    Duration::from_secs(2)
}
fn default_reopen() -> Duration {
    Duration::from_secs(3)
}
fn default_resend() -> Duration {
    Duration::from_secs(5)
}
fn default_max_credit() -> i64 {
    100_000
}

impl AgentConfig {
    /// What the agent assumes for the `[broker]` client keys left out:
    /// the kiosk id as user name, reconnect delays from 500 ms to 30 s
    /// (long enough that a fleet coming back does not storm the broker).
    pub fn client_defaults(&self) -> ClientDefaults<'_> {
        ClientDefaults {
            username: self.kiosk_id.as_str(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }

    /// The brokers: `broker.url`, or `broker.urls` in their order (checked:
    /// at least one, all of one scheme).
    pub fn broker_urls(&self) -> Vec<MqttUrl> {
        self.broker
            .url
            .iter()
            .chain(self.broker.client.urls.iter().flatten())
            .cloned()
            .collect()
    }

    /// The MQTT username: `broker.username`, or the kiosk id.
    pub fn username(&self) -> &str {
        self.broker.client.username(self.client_defaults())
    }

    /// Checks values the types accept but the agent cannot use, and
    /// combinations of keys; [`AgentConfig::load`] and
    /// [`AgentConfig::from_toml`] call it, so a loaded configuration is
    /// already checked.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let urls = self
            .broker
            .client
            .broker_urls(self.broker.url.as_ref())?
            .ok_or_else(|| {
                invalid(
                    "broker.url",
                    "required (or broker.urls for several brokers)",
                )
            })?;
        self.broker
            .client
            .check(urls.first(), self.client_defaults())?;
        if self.status.heartbeat < Duration::from_millis(100) {
            return Err(invalid("status.heartbeat", "must be at least 100ms"));
        }
        if self.print.max_job_bytes == 0 {
            return Err(invalid("print.max_job_bytes", "must be > 0"));
        }
        let mut fonts: std::collections::HashMap<Vec<PathBuf>, Arc<Fonts>> = Default::default();
        for (name, p) in &mut self.printers {
            let key = |k: &str| format!("printers.{name}.{k}");
            validate_printer_name(name).map_err(|m| invalid(format!("printers.{name}"), m))?;
            if let Some(name) = &p.profile {
                profile::profile(name).map_err(|e| invalid(key("profile"), e.to_string()))?;
            }
            if !(16..=96).contains(&p.columns()) {
                return Err(invalid(
                    key("width"),
                    format!("must be 16 to 96, got {}", p.columns()),
                ));
            }
            let charset = p
                .build_charset()
                .map_err(|e| invalid(key("code_page"), e))?;
            p.charset = Some(Arc::new(charset));
            let font_paths = match &p.font {
                Some(path) if !path.exists() => {
                    return Err(invalid(
                        key("font"),
                        format!("{} does not exist", path.display()),
                    ));
                }
                Some(path) => vec![path.clone()],
                None => default_font_paths(),
            };
            if !font_paths.is_empty() {
                let shared = fonts
                    .entry(font_paths.clone())
                    .or_insert_with(|| Arc::new(Fonts::new(font_paths)));
                p.fonts = Some(Arc::clone(shared));
            }
            match p.driver {
                DriverKind::Device | DriverKind::Tcp => {
                    if p.address.trim().is_empty() {
                        return Err(invalid(key("address"), "must not be empty"));
                    }
                    for (k, set) in [("queue", p.queue.is_some()), ("server", p.server.is_some())] {
                        if set {
                            return Err(invalid(key(k), "only used with driver = \"cups\""));
                        }
                    }
                }
                DriverKind::Cups => {
                    if !p.address.is_empty() {
                        return Err(invalid(
                            key("address"),
                            "not used with driver = \"cups\"; name the queue with `queue`",
                        ));
                    }
                    let queue = p.queue.as_deref().map(str::trim).unwrap_or("");
                    if queue.is_empty() {
                        return Err(invalid(key("queue"), "required with driver = \"cups\""));
                    }
                    // CUPS's own rule for destination names (lpadmin(8)).
                    if queue.len() > 127
                        || queue.chars().any(|c| {
                            c.is_whitespace() || c.is_control() || matches!(c, '/' | '#' | '\\')
                        })
                    {
                        return Err(invalid(
                            key("queue"),
                            format!(
                                "{queue:?} is not a CUPS queue name (at most 127 printable characters, no space, /, # or \\)"
                            ),
                        ));
                    }
                    if let Some(server) = &p.server
                        && (server.trim().is_empty() || server.contains('/'))
                    {
                        return Err(invalid(
                            key("server"),
                            format!("must be host:port or host, got {server:?}"),
                        ));
                    }
                }
            }
            if p.dots() < 8 {
                return Err(invalid(
                    key("dots"),
                    format!("must be at least 8, got {}", p.dots()),
                ));
            }
            if let Some(path) = &p.logo {
                let dots = u32::from(p.dots());
                let bitmap = std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        Bitmap::from_encoded(&bytes, |w| w.min(dots)).map_err(|e| e.to_string())
                    })
                    .map_err(|e| invalid(key("logo"), format!("{}: {e}", path.display())))?;
                p.logo_bitmap = Some(Arc::new(bitmap));
            }
        }
        if let Some(cash) = &self.cash {
            if cash.port.trim().is_empty() {
                return Err(invalid("cash.port", "must not be empty"));
            }
            if cash.baud == 0 {
                return Err(invalid("cash.baud", "must be > 0"));
            }
            if cash.max_credit <= 0 {
                return Err(invalid("cash.max_credit", "must be > 0"));
            }
            if cash.reopen_interval.is_zero() || cash.resend_interval.is_zero() {
                return Err(invalid(
                    "cash.resend_interval",
                    "cash.reopen_interval and cash.resend_interval must be > 0",
                ));
            }
        }
        Ok(self)
    }
}

impl Checked for AgentConfig {
    type File = AgentConfig;
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn check(file: AgentConfig) -> Result<Self, ConfigError> {
        file.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        kiosk_id = "demo-1"
        [broker]
        url = "mqtt://127.0.0.1:1883"
        password = "s3cret"
        [store]
        path = "/tmp/x"
        [printers.receipt]
        driver = "tcp"
        address = "127.0.0.1:9100"
    "#;

    #[test]
    fn defaults() {
        let c = AgentConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(c.username(), "demo-1");
        assert_eq!(c.status.heartbeat, Duration::from_secs(30));
        assert_eq!(c.broker.client.keep_alive, Duration::from_secs(30));
        let p = &c.printers["receipt"];
        assert_eq!(
            (
                p.driver,
                p.columns(),
                p.render_options().charset.start_page().name.as_str()
            ),
            (DriverKind::Tcp, 48, "CP437")
        );
        assert!(format!("{c:?}").contains("[redacted]"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn env_overrides_named_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, MINIMAL).unwrap();
        let env = [
            ("KIOSK_AGENT__BROKER__URL", "mqtt://10.0.0.1:1884"),
            (
                "KIOSK_AGENT__PRINTERS__RECEIPT__ADDRESS",
                "printer.local:9100",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = AgentConfig::load_with_env(&file, Some(env)).unwrap();
        assert_eq!(c.broker_urls()[0].to_string(), "mqtt://10.0.0.1:1884");
        assert_eq!(c.printers["receipt"].address, "printer.local:9100");
    }

    #[test]
    fn errors_name_the_key() {
        let bad = MINIMAL.replace("address = \"127.0.0.1:9100\"", "address = \"x\"\nwidth = 8");
        let err = AgentConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("printers.receipt.width"), "{err}");

        let bad = MINIMAL.replace("mqtt://127.0.0.1:1883", "http://x");
        let err = AgentConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("broker.url"), "{err}");

        let bad = MINIMAL.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtt://h\"\nca_file = \"ca.crt\"",
        );
        let err = AgentConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("broker.ca_file"), "{err}");

        let tls = MINIMAL.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtts://vps.example.com\"\nca_file = \"ca.crt\"",
        );
        let c = AgentConfig::from_toml(&tls).unwrap();
        assert!(c.broker_urls()[0].tls);
        let bad = tls.replace("ca_file", "client_cert = \"c.crt\"\nca_file");
        let err = AgentConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("broker.client_key"), "{err}");

        let bad = MINIMAL.replace("kiosk_id = \"demo-1\"", "kiosk_id = \"Demo 1\"");
        let err = AgentConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("kiosk id"), "{err}");

        let bad = MINIMAL.replace(
            "address = \"127.0.0.1:9100\"",
            "address = \"x\"\ncode_page = \"UTF-8\"",
        );
        let err = AgentConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("printers.receipt.code_page"), "{err}");
        assert!(err.contains("unknown code page"), "{err}");
    }

    /// A profile's features reach the renderer: QR codes as images and no
    /// cut on a 58 mm printer without either.
    #[test]
    fn the_profile_says_how_qr_codes_and_cuts_go_out() {
        let c = AgentConfig::from_toml(MINIMAL).unwrap();
        let o = c.printers["receipt"].render_options();
        assert_eq!((o.native_qr, o.cutter), (true, crate::render::Cutter::Full));
        let cheap = format!("{MINIMAL}\nprofile = \"POS-5890\"\n");
        let c = AgentConfig::from_toml(&cheap).unwrap();
        let o = c.printers["receipt"].render_options();
        assert_eq!(
            (o.native_qr, o.cutter),
            (false, crate::render::Cutter::None)
        );
        let th230 = format!("{MINIMAL}\nprofile = \"TH230\"\n");
        let o = AgentConfig::from_toml(&th230).unwrap().printers["receipt"].render_options();
        assert!(!o.native_qr);
    }

    /// Moved from `render`, which no longer knows the configuration.
    #[test]
    fn images_dots_logo_and_image_mode() {
        let c = AgentConfig::from_toml(MINIMAL).unwrap();
        let p = &c.printers["receipt"];
        assert_eq!((p.dots(), p.image_mode()), (576, ImageMode::Raster));
        assert!(p.render_options().logo.is_none());
        let narrow = MINIMAL.replace("address =", "width = 32\naddress =");
        assert_eq!(
            AgentConfig::from_toml(&narrow).unwrap().printers["receipt"].dots(),
            384
        );

        let dir = tempfile::tempdir().unwrap();
        let logo = dir.path().join("logo.png");
        // 600 dots wide: converted once, capped at the printer's 576.
        image::GrayImage::from_pixel(600, 30, image::Luma([0]))
            .save(&logo)
            .unwrap();
        let with_logo = format!("{MINIMAL}\nlogo = {:?}\n", logo.display().to_string());
        let c = AgentConfig::from_toml(&with_logo).unwrap();
        let bitmap = c.printers["receipt"].render_options().logo.unwrap();
        assert_eq!((bitmap.width(), bitmap.height()), (576, 29));

        let err = |toml: &str| AgentConfig::from_toml(toml).unwrap_err().to_string();
        let missing = format!("{MINIMAL}\nlogo = \"/nonexistent/logo.png\"\n");
        assert!(
            err(&missing).contains("printers.receipt.logo"),
            "{}",
            err(&missing)
        );
        let text = dir.path().join("logo.txt");
        std::fs::write(&text, "not an image").unwrap();
        let bad = format!("{MINIMAL}\nlogo = {:?}\n", text.display().to_string());
        assert!(err(&bad).contains("printers.receipt.logo"), "{}", err(&bad));
        let graphics = format!("{MINIMAL}\nimage_mode = \"graphics\"\n");
        let c = AgentConfig::from_toml(&graphics).unwrap();
        assert_eq!(c.printers["receipt"].image_mode(), ImageMode::Graphics);
        let e = err(&format!("{MINIMAL}\nimage_mode = \"sixel\"\n"));
        assert!(e.contains("image_mode"), "{e}");
        let bit = format!("{MINIMAL}\nimage_mode = \"bit_image\"\n");
        let c = AgentConfig::from_toml(&bit).unwrap();
        assert_eq!(
            c.printers["receipt"].render_options().image_mode,
            ImageMode::BitImage
        );
        let e = err(&format!("{MINIMAL}\ndots = 4\n"));
        assert!(e.contains("printers.receipt.dots"), "{e}");
    }

    #[test]
    fn cups_keys() {
        let cups = MINIMAL.replace(
            "driver = \"tcp\"\n        address = \"127.0.0.1:9100\"",
            "driver = \"cups\"\n        queue = \"kitchen\"",
        );
        let c = AgentConfig::from_toml(&cups).unwrap();
        let p = &c.printers["receipt"];
        assert_eq!(
            (p.driver, p.queue.as_deref(), p.server.as_deref()),
            (DriverKind::Cups, Some("kitchen"), None)
        );
        let with_server = format!("{cups}server = \"print.lan:631\"\n");
        let c = AgentConfig::from_toml(&with_server).unwrap();
        assert_eq!(
            c.printers["receipt"].server.as_deref(),
            Some("print.lan:631")
        );

        let err = |toml: &str| AgentConfig::from_toml(toml).unwrap_err().to_string();
        let e = err(&cups.replace("queue = \"kitchen\"", ""));
        assert!(
            e.contains("printers.receipt.queue") && e.contains("required"),
            "{e}"
        );
        let e = err(&cups.replace("\"kitchen\"", "\"my queue\""));
        assert!(e.contains("printers.receipt.queue"), "{e}");
        let e = err(&format!("{cups}address = \"/dev/usb/lp0\"\n"));
        assert!(e.contains("printers.receipt.address"), "{e}");
        let e = err(&format!("{cups}server = \"\"\n"));
        assert!(e.contains("printers.receipt.server"), "{e}");
        let e = err(&format!("{MINIMAL}queue = \"kitchen\"\n"));
        assert!(
            e.contains("printers.receipt.queue") && e.contains("only"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("address = \"127.0.0.1:9100\"", ""));
        assert!(e.contains("printers.receipt.address"), "{e}");
    }

    #[test]
    fn options_from_config() {
        let config: PrinterConfig = serde_json::from_value(serde_json::json!({
            "driver": "tcp", "address": "x", "width": 32, "code_page": "pc852", "timeout": "1s"
        }))
        .unwrap();
        let mut config = config;
        config.charset = Some(Arc::new(config.build_charset().unwrap()));
        let opts = config.render_options();
        assert_eq!(
            (opts.columns, opts.dots, opts.image_mode),
            (32, 384, ImageMode::Raster)
        );
        assert!(opts.logo.is_none());
        let start = opts.charset.start_page();
        assert_eq!((start.name.as_str(), start.number), ("CP852", 18));
    }
}

//! `kiosk-gateway`: see `kiosk-gateway --help`.

use kiosk_schemas::settings::Checked as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kiosk_gateway::{GatewayConfig, admin, api_keys};
use kiosk_schemas::KioskId;
use tokio_util::sync::CancellationToken;

/// The kiosk-fleet gateway: HTTP API for print jobs, durable job store, and
/// (by default) the MQTT broker the kiosks connect to.
///
/// Configuration comes from the TOML file given with --config, then from
/// environment variables KIOSK_GATEWAY__<SECTION>__<KEY> (for example
/// KIOSK_GATEWAY__HTTP__LISTEN=0.0.0.0:8080). Logs go to stderr; set
/// RUST_LOG (e.g. RUST_LOG=kiosk_gateway=debug) for more.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML), e.g. examples/gateway.toml.
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Check the configuration and exit: prints "ok" or the bad key.
    CheckConfig,
    /// Manage API keys of the HTTP API (file `http.api_keys`).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage kiosks' MQTT credentials (file `broker.credentials`).
    Kiosk {
        #[command(subcommand)]
        command: KioskCommand,
    },
    /// Manage operators of the fleet page `/fleet` (file `http.operators`).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Write an external broker's own authentication and authorization
    /// from `broker.credentials` and `broker.acl` (or the built-in policy),
    /// for `broker.embedded = false`.
    ///
    /// mosquitto: DIR/password_file ($7$ PBKDF2-SHA512), DIR/acl_file (one
    /// `user` block of `topic` lines per user, %u/%c expanded) and
    /// DIR/mosquitto.conf (allow_anonymous false, both files). nats:
    /// DIR/authorization.conf (`authorization { users }` with bcrypt
    /// passwords, MQTT connections only, per-user publish/subscribe
    /// permissions on the mapped subjects, plus $MQTT.sub.> for QoS 1
    /// deliveries) and DIR/nats.conf (JetStream + MQTT, includes it). Each
    /// DIR/README.txt says how to include them.
    ///
    /// The credentials file keeps only hashes neither broker can check, so
    /// every user's secret must be given with --secrets and is checked
    /// against it; a user without one is an error listing them all, unless
    /// --issue-missing gives them new secrets. Secrets are never printed.
    /// A rule the target cannot enforce as written (a %c rule of a role
    /// user; for NATS a wildcard or `$` first level, or a deny inside a read
    /// rule) is refused: nothing is written and nothing is widened. Run it
    /// again after `kiosk add|rotate|remove` and reload the broker.
    BrokerConfig {
        /// Target broker: `mosquitto` (2.x) or `nats` (nats-server 2.9+
        /// with MQTT: MQTT 3.1.1 only, no QoS 2, no $share).
        #[arg(long, value_name = "FORMAT")]
        format: kiosk_broker::external::Format,
        /// Output directory (created if missing); files with hashes are
        /// written mode 0600.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Where the users' secrets are (repeatable): a provisioning file
        /// of `kiosk add --out` (*.json), a directory of them, a text file
        /// of `user:password` lines, or `-` for such lines on stdin.
        #[arg(long, value_name = "PATH")]
        secrets: Vec<PathBuf>,
        /// Give every user without a secret a new generated one: written to
        /// DIR/secrets/<user>.credentials.json (0600) for delivery and
        /// stored in broker.credentials (their old password stops working).
        #[arg(long)]
        issue_missing: bool,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Add operator NAME, or give NAME a new password. The password is
    /// read from standard input (one line), so it never shows in the
    /// process list or the shell history:
    /// `printf '%s\n' "$PW" | kiosk-gateway -c gateway.toml operator add ana`.
    /// Takes effect at the next sign-in; no restart needed.
    Add {
        /// Name, 1 to 64 of a-z, 0-9, '.', '_', '-'.
        name: String,
    },
    /// Remove operator NAME; their open sessions end at their next request.
    Remove {
        /// Name.
        name: String,
    },
}

#[derive(Subcommand)]
enum KioskCommand {
    /// Create KIOSK_ID with a random secret (192 bits); store only its hash
    /// and write the kiosk's credentials to a provisioning file (JSON, 0600).
    Add {
        /// Kiosk id, [a-z0-9-]{1,64}.
        kiosk_id: KioskId,
        /// Provisioning file; default `<kiosk_id>.credentials.json`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Give KIOSK_ID a new secret; the old one stops working, and a running
    /// broker drops the kiosk's live connection within a second (it must
    /// come back with the new secret).
    Rotate {
        /// Kiosk id.
        kiosk_id: KioskId,
        /// Provisioning file; default `<kiosk_id>.credentials.json`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete KIOSK_ID's credentials; it cannot log in again, and a running
    /// broker drops its live connection within a second.
    Remove {
        /// Kiosk id.
        kiosk_id: KioskId,
    },
    /// List the kiosks of the credentials file.
    List,
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create a key named NAME, store its hash, print the key once.
    Add {
        /// Name shown in logs and job origins, e.g. `pos-backend`.
        name: String,
    },
}

fn init_tracing() {
    // rumqttd's info lines (every subscription) and routine errors are
    // noise for an operator: see kiosk_broker::logging.
    kiosk_broker::logging::init("info,rumqttd=warn");
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<GatewayConfig> {
    let path = config.context("--config FILE is required")?;
    GatewayConfig::load(path).with_context(|| format!("loading {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let config = load(cli.config.as_ref())?;
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                signal.cancel();
            });
            let gateway = kiosk_gateway::Gateway::start(config).await?;
            // Under systemd (Type=notify, see ansible/roles/kiosk_server):
            // READY once the store is open and the listeners are bound,
            // WATCHDOG while the runtime answers, STOPPING on the way out.
            // All no-ops without NOTIFY_SOCKET.
            notify(&[sd_notify::NotifyState::Ready]);
            if let Some(timeout) = sd_notify::watchdog_enabled() {
                let token = shutdown.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(timeout / 2);
                    while token.run_until_cancelled(tick.tick()).await.is_some() {
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                });
            }
            shutdown.cancelled().await;
            notify(&[sd_notify::NotifyState::Stopping]);
            gateway.shutdown().await;
        }
        Command::CheckConfig => {
            load(cli.config.as_ref())?;
            println!("ok");
        }
        Command::Apikey {
            command: ApikeyCommand::Add { name },
        } => {
            let config = load(cli.config.as_ref())?;
            let file = config
                .http
                .api_keys
                .context("http.api_keys is not set in the configuration")?;
            let key = api_keys::add_key(&file, &name)?;
            eprintln!(
                "added API key {name:?} to {}; it is shown only now:",
                file.display()
            );
            println!("{key}");
        }
        Command::Operator { command } => {
            let config = load(cli.config.as_ref())?;
            let file = config
                .http
                .operators
                .context("http.operators is not set in the configuration")?;
            match command {
                OperatorCommand::Add { name } => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprint!("password for {name} (shown as typed; or pipe it in): ");
                    }
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from standard input")?;
                    let password = kiosk_schemas::Secret::new(line.trim_end_matches(['\r', '\n']));
                    kiosk_gateway::operators::add(&file, &name, &password)?;
                    eprintln!("operator {name} can sign in at /fleet ({})", file.display());
                }
                OperatorCommand::Remove { name } => {
                    if kiosk_gateway::operators::remove(&file, &name)? {
                        eprintln!("removed operator {name}");
                    } else {
                        anyhow::bail!("no operator {name} in {}", file.display());
                    }
                }
            }
        }
        Command::BrokerConfig {
            format,
            out,
            secrets,
            issue_missing,
        } => {
            let config = load(cli.config.as_ref())?;
            let credentials = config
                .broker
                .credentials()
                .context("broker.credentials is not set in the configuration")?
                .to_owned();
            let request = kiosk_gateway::broker_config::Request {
                credentials,
                acl: config.broker.acl().map(ToOwned::to_owned),
                format,
                out,
                secrets,
                issue_missing,
            };
            let written = kiosk_gateway::broker_config::write(&request)?;
            for user in &written.ignored {
                eprintln!("ignored the secret of {user}: not in broker.credentials");
            }
            for path in &written.issued {
                eprintln!(
                    "new secret written to {} (deliver it, then delete it)",
                    path.display()
                );
            }
            for path in &written.files {
                println!("{}", path.display());
            }
            eprintln!(
                "wrote the {format} configuration of {} users to {}",
                written.users,
                request.out.display()
            );
        }
        Command::Kiosk { command } => {
            let config = load(cli.config.as_ref())?;
            let creds = config
                .broker
                .credentials()
                .context("broker.credentials is not set in the configuration")?
                .to_owned();
            let default_out = |k: &KioskId| PathBuf::from(format!("{k}.credentials.json"));
            match command {
                KioskCommand::Add { kiosk_id, out } => {
                    let out = out.unwrap_or_else(|| default_out(&kiosk_id));
                    let client_id = &config.broker.client_id;
                    let gateway_ids = [client_id.clone(), format!("{client_id}-pub")];
                    admin::add(&creds, &kiosk_id, &out, &gateway_ids)?;
                    eprintln!(
                        "added kiosk {kiosk_id}; its credentials are in {}",
                        out.display()
                    );
                }
                KioskCommand::Rotate { kiosk_id, out } => {
                    let out = out.unwrap_or_else(|| default_out(&kiosk_id));
                    admin::rotate(&creds, &kiosk_id, &out)?;
                    eprintln!("new secret for kiosk {kiosk_id} in {}", out.display());
                }
                KioskCommand::Remove { kiosk_id } => {
                    admin::remove(&creds, &kiosk_id)?;
                    eprintln!("removed kiosk {kiosk_id}");
                }
                KioskCommand::List => {
                    for k in admin::list(&creds)? {
                        println!("{k}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sends `states` to systemd (`sd_notify(3)`); a failure is only logged.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

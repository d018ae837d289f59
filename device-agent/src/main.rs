//! `kiosk-agent`: see `kiosk-agent --help`.

use kiosk_schemas::settings::Checked as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kiosk_agent::AgentConfig;
use kiosk_agent::notify::{self, Supervised};
use tokio_util::sync::CancellationToken;

/// The kiosk-fleet agent for one kiosk: keeps an outbound MQTT session to
/// the cloud broker, stores print jobs durably before acknowledging them,
/// and prints them on ESC/POS printers.
///
/// Configuration comes from the TOML file given with --config, then from
/// environment variables KIOSK_AGENT__<SECTION>__<KEY> (for example
/// KIOSK_AGENT__BROKER__URL=mqtt://vps.example.com:1883 or
/// KIOSK_AGENT__PRINTERS__RECEIPT__ADDRESS=192.168.1.50:9100). Logs go to
/// stderr; set RUST_LOG (e.g. RUST_LOG=kiosk_agent=debug) for more.
#[derive(Parser)]
#[command(version, about, long_about, subcommand_negates_reqs = true)]
struct Cli {
    /// Configuration file (TOML), e.g. /etc/kiosk-agent/agent.toml.
    #[arg(long, short, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Check the configuration (file and environment) and exit: prints "ok"
    /// or the bad key, exit status 0 or 1.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List attached USB printers and the configured printers' status.
    ///
    /// Lists the USB printers attached (/dev/usb/lp* with the manufacturer,
    /// model and command set from their IEEE 1284 device id in
    /// /sys/class/usbmisc/lpN/device/ieee1284_id) and, with --config, each
    /// configured printer with its driver, address and status, read once
    /// (up to the printer's timeout per step). Helps write agent.toml's
    /// [printers.<name>] sections; does not start the agent. Example:
    /// kiosk-agent printers --config /etc/kiosk-agent/agent.toml
    ///
    /// With --profiles, lists the printer profiles of the ESC/POS printer
    /// database instead (the names `printers.<name>.profile` takes), with
    /// their dot width, columns, code pages and image command.
    Printers {
        /// Configuration file (TOML) whose printers to show.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// List the printer profiles instead.
        #[arg(long)]
        profiles: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Printers { profiles: true, .. }) = &cli.command {
        print!("{}", kiosk_agent::render::profile::listing());
        return Ok(());
    }
    if let Some(Command::Printers { config, .. }) = &cli.command {
        let config = match config {
            Some(path) => Some(
                AgentConfig::load(path).with_context(|| format!("loading {}", path.display()))?,
            ),
            None => None,
        };
        let roots = kiosk_agent::printer::usb::Roots::default();
        let report = tokio::task::spawn_blocking(move || {
            kiosk_agent::printer::usb::survey(&roots, config.as_ref())
        })
        .await?;
        print!("{report}");
        return Ok(());
    }
    let Some(config_path) = cli.config else {
        anyhow::bail!("--config FILE is required");
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = AgentConfig::load(&config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    if cli.check_config {
        println!("ok");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let agent = kiosk_agent::Agent::start(config).await?;
    // Under systemd (Type=notify): READY once started, WATCHDOG while every
    // task is alive, STOPPING on the way out. No-ops without NOTIFY_SOCKET.
    notify::ready();
    let outcome = notify::supervise(&agent, &shutdown).await;
    notify::stopping();
    agent.shutdown().await;
    if outcome == Supervised::Died {
        // Exit non-zero so that the service manager restarts the agent
        // (Restart=always), rather than running on half dead.
        anyhow::bail!("a task of the agent stopped unexpectedly");
    }
    Ok(())
}

async fn wait_for_signal() {
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

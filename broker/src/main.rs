//! `kiosk-broker`: the fleet's MQTT broker as a standalone program, and
//! `kiosk-broker passwd` to manage its credentials file.

use std::io::{self, BufRead};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use kiosk_broker::passwd::{NewPassword, passwd};
use kiosk_broker::{BrokerConfig, Change, Role, delete_user};
use kiosk_schemas::Secret;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// MQTT broker of the kiosk fleet (rumqttd with per-client credentials,
/// topic ACL, TLS and connection limits).
///
/// Without a subcommand, runs the broker until SIGTERM or Ctrl-C. The
/// configuration is the TOML file given with --config (keys: listen,
/// tls_listen, tls_cert, tls_key, tls_client_ca, credentials, acl,
/// max_payload_bytes, max_connections, connections_per_second,
/// failed_logins_per_minute, connect_timeout, max_inflight,
/// max_segment_size, max_segment_count; see examples/broker.toml),
/// overridden by environment variables KIOSK_BROKER__<KEY>, e.g.
/// KIOSK_BROKER__LISTEN=off. Only `credentials` is required.
///
/// Logs go to stderr; set RUST_LOG to filter them (default
/// "info,rumqttd=warn").
#[derive(Debug, Parser)]
#[command(name = "kiosk-broker", version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add, update or delete a user of a credentials file, like
    /// mosquitto_passwd. A running broker picks the change up at the next
    /// login.
    Passwd(PasswdArgs),
}

/// Adds USER to FILE, or changes its password, or deletes it with -D.
///
/// Without --generate or --password-stdin, asks for the password twice on
/// the terminal. Chosen passwords are stored as argon2id; generated secrets
/// (for kiosks and other machines) as salted SHA-256, which is fast enough
/// for thousands of reconnections per second.
#[derive(Debug, Args)]
struct PasswdArgs {
    /// Delete USER from FILE.
    #[arg(short = 'D', long, conflicts_with_all = ["role", "generate", "password_stdin"])]
    delete: bool,

    /// Role of USER: kiosk, gateway, backend or technician. Defaults to
    /// USER's name for the users gateway, backend and technician, and to
    /// kiosk otherwise (then USER must be a kiosk id, [a-z0-9-]{1,64}).
    #[arg(long, value_name = "ROLE")]
    role: Option<Role>,

    /// Generate a random 192-bit secret, store its hash and print the secret
    /// once on stdout.
    #[arg(long, conflicts_with = "password_stdin")]
    generate: bool,

    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,

    /// Credentials file; created (mode 0600) if missing.
    file: PathBuf,

    /// User name.
    user: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Some(Command::Passwd(args)) => passwd_command(args),
        None => serve(cli.config).await,
    }
}

fn init_tracing() {
    kiosk_broker::logging::init("info,rumqttd=warn");
}

async fn serve(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = BrokerConfig::load(config_file.as_deref())?;
    let shutdown = CancellationToken::new();
    // Installed before the broker starts, so a signal is never missed.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => info!("Ctrl-C received, shutting down"),
        }
        on_signal.cancel();
    });
    kiosk_broker::run(config, shutdown).await?;
    Ok(())
}

fn passwd_command(args: PasswdArgs) -> anyhow::Result<()> {
    let file = args.file.display();
    if args.delete {
        if delete_user(&args.file, &args.user)? {
            eprintln!("deleted user {} from {file}", args.user);
        } else {
            eprintln!("user {} is not in {file}", args.user);
        }
        return Ok(());
    }
    let password = if args.generate {
        NewPassword::Generate
    } else if args.password_stdin {
        NewPassword::Chosen(read_stdin_password()?)
    } else {
        NewPassword::Chosen(prompt_password()?)
    };
    let outcome = passwd(&args.file, &args.user, args.role, password)?;
    let verb = match outcome.change {
        Change::Added => "added",
        Change::Updated => "updated",
    };
    eprintln!(
        "{verb} user {} (role {}) in {file}",
        args.user, outcome.role
    );
    if let Some(secret) = outcome.generated {
        println!("{}", secret.expose());
    }
    Ok(())
}

fn read_stdin_password() -> anyhow::Result<Secret> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("empty password on stdin");
    }
    Ok(Secret::new(password))
}

fn prompt_password() -> anyhow::Result<Secret> {
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    if first.is_empty() {
        bail!("empty password");
    }
    let second =
        rpassword::prompt_password("Reenter password: ").context("cannot read the password")?;
    if first != second {
        bail!("passwords do not match");
    }
    Ok(Secret::new(first))
}

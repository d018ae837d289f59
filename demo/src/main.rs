//! `kiosk-demo`: the main job on one machine.
//!
//! Starts the VPS side exactly as `kiosk-gateway --config examples/gateway.toml`
//! would (HTTP API on 127.0.0.1:8080, embedded MQTT broker on
//! 127.0.0.1:1883, sled store), plus the kiosk `demo-1` from
//! `examples/agent.toml` in the same process, whose `receipt` printer
//! writes ESC/POS to `demo-out/receipt.escpos` instead of a real printer.
//! Prints `examples/receipt.json` once over the HTTP API, shows a text
//! preview of every ticket that reaches the printer file, and the commands
//! to try next. Stop with ctrl-c.

use kiosk_schemas::settings::Checked as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use kiosk_agent::AgentConfig;
use kiosk_agent::config::DriverKind;
use kiosk_agent::render::render;
use kiosk_gateway::{Gateway, GatewayConfig};
use kiosk_schemas::{Document, RawDocument};
use serde_json::Value;

/// API key of examples/api-keys (only its SHA-256 is in that file).
const DEMO_API_KEY: &str = "demo-api-key-change-me";
/// Password of the demo's fleet page operator `demo`.
const DEMO_OPERATOR_PASSWORD: &str = "demo-operator-change-me";
/// Password of the `technician` user in examples/credentials.
const DEMO_TECHNICIAN_PASSWORD: &str = "technician-secret-change-me";

/// Runs the gateway (with embedded broker and store) and a demo kiosk whose
/// receipt printer writes to a file, prints a sample receipt, and shows a
/// text preview of everything printed.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Folder with gateway.toml, agent.toml, credentials, api-keys and
    /// receipt.json.
    #[arg(long, default_value_os_t = default_examples())]
    examples: PathBuf,
    /// Folder for the stores and the printer file (created if missing).
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
}

fn default_examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kiosk_broker::logging::init("warn,kiosk_gateway=info,kiosk_agent=info");

    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let examples = cli
        .examples
        .canonicalize()
        .with_context(|| format!("{} not found; pass --examples DIR", cli.examples.display()))?;
    // The example configs name their files relative to the repository
    // root (`examples/...`), so run from there.
    let out = cli.out.canonicalize()?;
    std::env::set_current_dir(examples.parent().context("examples has no parent")?)?;

    let mut gateway_config = GatewayConfig::load(&examples.join("gateway.toml"))?;
    gateway_config.store.path = out.join("gateway-store");
    // An operator for the fleet page, so /fleet can be tried at once.
    let operators = out.join("operators");
    if !operators.exists() {
        kiosk_gateway::operators::add(
            &operators,
            "demo",
            &kiosk_schemas::Secret::new(DEMO_OPERATOR_PASSWORD),
        )?;
    }
    gateway_config.http.operators = Some(operators);
    let gateway = Gateway::start(gateway_config)
        .await
        .context("starting the gateway (is something else on 127.0.0.1:8080 or :1883?)")?;
    let http = format!("http://{}", gateway.http_addr());
    let mqtt = gateway.mqtt_addr().context("embedded broker")?;

    let printer_file = out.join("receipt.escpos");
    std::fs::write(&printer_file, b"")?;
    let mut agent_config = AgentConfig::load(&examples.join("agent.toml"))?;
    agent_config.store.path = out.join("agent-demo-1");
    let receipt = agent_config
        .printers
        .get_mut("receipt")
        .context("examples/agent.toml has no [printers.receipt]")?;
    receipt.driver = DriverKind::Device;
    receipt.address = printer_file.display().to_string();
    let options = receipt.render_options();
    let agent = kiosk_agent::Agent::start(agent_config).await?;

    let client = reqwest::Client::new();
    wait_online(&client, &http).await?;
    let body: Value = serde_json::from_slice(&std::fs::read(examples.join("receipt.json"))?)?;
    let resp = client
        .post(format!("{http}/v1/kiosks/demo-1/print-jobs"))
        .bearer_auth(DEMO_API_KEY)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let job: Value = resp.json().await?;
    if !status.is_success() {
        bail!("posting the sample receipt failed: {status} {job}");
    }
    let job_id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let printed = wait_printed(&client, &http, &job_id).await?;

    let document: Document = serde_json::from_value(body["document"].clone())?;
    println!(
        "\nkiosk-fleet demo: gateway http://{} · MQTT {mqtt} · kiosk demo-1",
        gateway.http_addr()
    );
    println!("\nPrinted job {job_id}, history:");
    for h in printed["history"].as_array().into_iter().flatten() {
        println!(
            "  {:<9} {}",
            h["state"].as_str().unwrap_or(""),
            h["at"].as_str().unwrap_or("")
        );
    }
    println!(
        "\nESC/POS written to {}; what the paper shows:\n",
        printer_file.display()
    );
    print_ticket(&render(&document, &options)?.preview);
    println!("Try next (another terminal):");
    println!(
        "  curl -s -X POST {http}/v1/kiosks/demo-1/print-jobs -H 'Authorization: Bearer {DEMO_API_KEY}' \\\n       -H 'Content-Type: application/json' -d '{{\"printer\":\"receipt\",\"document\":{{\"kind\":\"text\",\"text\":\"Hello from curl\\n\"}}}}'"
    );
    println!("  curl -s {http}/v1/print-jobs/{job_id} -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  curl -s {http}/v1/kiosks -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  open {http}/fleet in a browser: operator demo, password {DEMO_OPERATOR_PASSWORD}");
    println!(
        "  mosquitto_sub -h {} -p {} -u technician -P {DEMO_TECHNICIAN_PASSWORD} -v -t 'kiosk/+/#'",
        mqtt.ip(),
        mqtt.port()
    );
    println!("\nEvery ticket that reaches the printer file is shown here. Ctrl-C stops.\n");

    let mut seen = std::fs::metadata(&printer_file)?.len();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let len = std::fs::metadata(&printer_file)
            .map(|m| m.len())
            .unwrap_or(seen);
        if len > seen {
            let bytes = std::fs::read(&printer_file)?;
            let start = usize::try_from(seen).unwrap_or(0).min(bytes.len());
            let doc = Document::Raw(RawDocument::from_bytes(&bytes[start..]));
            println!("printer received {} bytes:\n", len - seen);
            print_ticket(&render(&doc, &options)?.preview);
            seen = len;
        }
    }
    agent.shutdown().await;
    gateway.shutdown().await;
    Ok(())
}

fn print_ticket(preview: &str) {
    for line in preview.lines() {
        println!("    | {line}");
    }
    println!();
}

async fn wait_online(client: &reqwest::Client, http: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        let resp = client
            .get(format!("{http}/v1/kiosks/demo-1"))
            .bearer_auth(DEMO_API_KEY)
            .send()
            .await?;
        let kiosk: Value = resp.json().await.unwrap_or_default();
        if kiosk["status"] == "online" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the demo kiosk did not come online within 10 s")
}

async fn wait_printed(client: &reqwest::Client, http: &str, job_id: &str) -> anyhow::Result<Value> {
    for _ in 0..200 {
        let job: Value = client
            .get(format!("{http}/v1/print-jobs/{job_id}"))
            .bearer_auth(DEMO_API_KEY)
            .send()
            .await?
            .json()
            .await?;
        match job["state"].as_str() {
            Some("printed") => return Ok(job),
            Some("failed" | "expired") => bail!("the sample receipt did not print: {job}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    bail!("the sample receipt was not printed within 10 s")
}

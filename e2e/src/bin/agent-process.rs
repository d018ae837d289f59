//! `agent-process --config FILE`: the kiosk agent as a process of its own,
//! for tests that stop or kill it with a signal (SIGSTOP, SIGKILL) — which
//! an agent inside the test's own process cannot take. It runs exactly
//! what `kiosk-agent` runs: load the configuration, `Agent::start`, stop on
//! SIGTERM or ctrl-c.

use anyhow::Context as _;
use kiosk_schemas::settings::Checked as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiosk_testkit::init_test_tracing();
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(path)) => path,
        _ => anyhow::bail!("usage: agent-process --config FILE"),
    };
    let config = kiosk_agent::AgentConfig::load(std::path::Path::new(&path))
        .with_context(|| format!("loading {path}"))?;
    let agent = kiosk_agent::Agent::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    agent.shutdown().await;
    Ok(())
}

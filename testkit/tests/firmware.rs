//! The compiled cash-acceptor sketch (`firmware/cash-acceptor/`) in simavr,
//! spoken to over its pty the way the agent does, without the agent:
//! protocol v2 (`READY:v2:<boot id>`, `CREDIT:<seq>:<kind>:<minor units>`,
//! `ACK:<seq>`), the 1 s re-send, the 3 s lease, the 16-credit buffer.
//!
//! Needs `scripts/firmware.sh` (the ELF and the harness); skips without
//! them unless `KIOSK_REQUIRE_FIRMWARE=1`. The simulation runs in real
//! time, so every wait here is a generous deadline and the only timing
//! assertions are lower bounds (simulated time never runs ahead of the wall
//! clock).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kiosk_testkit::SimAcceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;

/// Deadline for anything the board should do "at once" on a loaded machine.
const SOON: Duration = Duration::from_secs(5);

/// The host's end of the board's serial line.
struct Port {
    lines: mpsc::UnboundedReceiver<String>,
    writer: Arc<Mutex<WriteHalf<SerialStream>>>,
    reader: JoinHandle<()>,
}

/// Sends `ENABLE` every 500 ms until dropped, as the agent does while it
/// wants money.
struct Renewer(JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Port {
    fn open(sim: &SimAcceptor) -> anyhow::Result<Port> {
        let path = sim.path().to_string_lossy().into_owned();
        let port = SerialStream::open(&tokio_serial::new(&path, 9600))
            .with_context(|| format!("opening {path}"))?;
        let (mut rd, wr) = tokio::io::split(port);
        let (tx, lines) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut line = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Ok(n) => {
                        for &b in &buf[..n] {
                            if b == b'\n' {
                                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                                if tx.send(text).is_err() {
                                    return;
                                }
                                line.clear();
                            } else {
                                line.push(b);
                            }
                        }
                    }
                }
            }
        });
        Ok(Port {
            lines,
            writer: Arc::new(Mutex::new(wr)),
            reader,
        })
    }

    async fn send(&self, line: &str) -> anyhow::Result<()> {
        let mut w = self.writer.lock().await;
        w.write_all(format!("{line}\n").as_bytes()).await?;
        w.flush().await?;
        Ok(())
    }

    fn renew(&self) -> Renewer {
        let writer = self.writer.clone();
        Renewer(tokio::spawn(async move {
            loop {
                {
                    let mut w = writer.lock().await;
                    if w.write_all(b"ENABLE\n").await.is_err() || w.flush().await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }

    /// The next line within `timeout`.
    async fn next_line(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// Reads lines until one satisfies `want`, within `timeout`; the lines
    /// before it are returned too, for assertions about what came between.
    async fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_line(left).await {
                Some(line) if want(&line) => return Ok((line, before)),
                Some(line) => before.push(line),
                None => bail!("no wanted line within {timeout:?}; got {before:?}"),
            }
        }
    }

    /// Every line that arrives within `period`.
    async fn collect(&mut self, period: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + period;
        let mut got = Vec::new();
        while let Some(line) = self
            .next_line(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            got.push(line);
        }
        got
    }

    /// Reads `READY:v2:<boot id>` and returns the boot id.
    async fn ready(&mut self) -> anyhow::Result<String> {
        let (line, _) = self
            .wait_for(Duration::from_secs(10), |l| l.starts_with("READY"))
            .await?;
        let id = line
            .strip_prefix("READY:v2:")
            .with_context(|| format!("not a v2 READY: {line:?}"))?;
        ensure!(
            id.len() == 8
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "boot id is not 8 lowercase hex digits: {line:?}"
        );
        Ok(id.to_owned())
    }
}

/// `CREDIT:<seq>:<kind>:<amount>` split up.
fn credit(line: &str) -> Option<(u32, &str, u64)> {
    let mut parts = line.strip_prefix("CREDIT:")?.split(':');
    let seq = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let amount = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((seq, kind, amount))
}

#[tokio::test]
async fn credits_are_resent_until_acked_and_the_lease_expires() -> anyhow::Result<()> {
    kiosk_testkit::init_test_tracing();
    let dir = tempfile::tempdir()?;
    let Some(sim) = SimAcceptor::start(dir.path()).await? else {
        return Ok(());
    };
    let mut port = Port::open(&sim)?;
    let boot_id = port.ready().await?;
    ensure!(
        sim.wait_inhibited(true, SOON).await,
        "the board must boot inhibited"
    );

    let renewer = port.renew();
    ensure!(
        sim.wait_inhibited(false, SOON).await,
        "ENABLE must release the inhibit lines"
    );

    sim.coin(2).await?;
    let (line, _) = port.wait_for(SOON, |l| l.starts_with("CREDIT:")).await?;
    ensure!(line == "CREDIT:1:COIN:20", "first credit: {line:?}");
    let first = Instant::now();
    let (again, between) = port.wait_for(SOON, |l| l.starts_with("CREDIT:")).await?;
    ensure!(again == line, "re-send: {again:?} (before it: {between:?})");
    ensure!(
        first.elapsed() >= Duration::from_millis(500),
        "re-sent after only {:?}",
        first.elapsed()
    );

    // HELLO: the same boot id again, and the unacknowledged credit at once.
    port.send("HELLO").await?;
    let (hello, _) = port.wait_for(SOON, |l| l.starts_with("READY")).await?;
    ensure!(
        hello == format!("READY:v2:{boot_id}"),
        "HELLO answered {hello:?}"
    );
    let (after, _) = port
        .wait_for(Duration::from_millis(500), |l| l.starts_with("CREDIT:"))
        .await?;
    ensure!(after == line, "re-sent right after HELLO: {after:?}");

    port.send("ACK:1").await?;
    // A re-send may cross the ACK; after that, silence about seq 1.
    port.collect(Duration::from_millis(1500)).await;
    let later = port.collect(Duration::from_secs(2)).await;
    ensure!(
        !later.iter().any(|l| l.starts_with("CREDIT:1:")),
        "still re-sent after ACK:1: {later:?}"
    );
    ensure!(sim.inhibited() == Some(false), "still accepting after ACK");

    sim.bill(1).await?;
    let (line, _) = port.wait_for(SOON, |l| l.starts_with("CREDIT:")).await?;
    ensure!(line == "CREDIT:2:BILL:500", "bill credit: {line:?}");
    port.send("ACK:2").await?;

    // The host goes quiet: the lease runs out after 3 s.
    drop(renewer);
    let quiet = Instant::now();
    let (_, between) = port
        .wait_for(Duration::from_secs(10), |l| l == "ERR:lease")
        .await?;
    ensure!(
        // The last ENABLE went out up to 500 ms before the drop.
        quiet.elapsed() >= Duration::from_secs(2),
        "lease expired after only {:?}",
        quiet.elapsed()
    );
    ensure!(
        between
            .iter()
            .filter(|l| l.starts_with("CREDIT:2:"))
            .count()
            <= 1,
        "ACK:2 ignored: {between:?}"
    );
    ensure!(
        sim.wait_inhibited(true, SOON).await,
        "an expired lease must inhibit"
    );

    // Another line is not an ENABLE: still inhibited, and ERR:lease only once.
    port.send("ACK:99").await?;
    let after = port.collect(Duration::from_millis(1500)).await;
    ensure!(sim.inhibited() == Some(true), "re-enabled without ENABLE");
    ensure!(
        !after.iter().any(|l| l.starts_with("ERR:lease")),
        "ERR:lease twice: {after:?}"
    );
    port.send("ENABLE").await?;
    ensure!(
        sim.wait_inhibited(false, SOON).await,
        "ENABLE after the lease ran out must accept again"
    );
    Ok(())
}

#[tokio::test]
async fn sixteen_unacknowledged_credits_fill_the_buffer() -> anyhow::Result<()> {
    kiosk_testkit::init_test_tracing();
    let dir = tempfile::tempdir()?;
    let Some(sim) = SimAcceptor::start(dir.path()).await? else {
        return Ok(());
    };
    let mut port = Port::open(&sim)?;
    port.ready().await?;
    let _renewer = port.renew();
    ensure!(sim.wait_inhibited(false, SOON).await, "ENABLE ignored");

    // Two validators at once, eight items each: 16 credits in about 4 s.
    for _ in 0..8 {
        sim.coin(1).await?;
        sim.bill(1).await?;
    }
    let mut seen = BTreeMap::new();
    let mut full = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while seen.len() < 16 || full == 0 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(line) = port.next_line(left).await else {
            bail!("got {} credits ({seen:?}) and {full} ERR:full", seen.len());
        };
        if line == "ERR:full" {
            full += 1;
        } else if let Some((seq, kind, amount)) = credit(&line) {
            // A re-send must repeat the credit exactly.
            let first = seen.entry(seq).or_insert((kind.to_owned(), amount));
            ensure!(*first == (kind.to_owned(), amount), "{line:?} vs {first:?}");
        }
    }
    ensure!(
        seen.keys().copied().eq(1..=16),
        "seqs 1..=16 expected: {seen:?}"
    );
    let total: u64 = seen.values().map(|(_, amount)| amount).sum();
    ensure!(total == 8 * 10 + 8 * 500, "total {total}: {seen:?}");
    ensure!(
        sim.wait_inhibited(true, SOON).await,
        "a full buffer must inhibit"
    );

    // A coin that still falls in while full is counted, and held.
    sim.coin(3).await?;
    let held = port.collect(Duration::from_millis(1500)).await;
    ensure!(
        !held
            .iter()
            .any(|l| credit(l).is_some_and(|(seq, _, _)| seq > 16)),
        "a credit without a free slot: {held:?}"
    );
    ensure!(
        !held.iter().any(|l| l == "ERR:full"),
        "ERR:full twice: {held:?}"
    );

    for seq in 1..=4 {
        port.send(&format!("ACK:{seq}")).await?;
    }
    ensure!(
        sim.wait_inhibited(false, SOON).await,
        "ACKs freed slots; the board must accept again"
    );
    let (line, _) = port
        .wait_for(SOON, |l| credit(l).is_some_and(|(seq, _, _)| seq == 17))
        .await?;
    ensure!(line == "CREDIT:17:COIN:30", "the held coin: {line:?}");
    Ok(())
}

#[tokio::test]
async fn every_boot_has_a_new_id_and_counts_from_one() -> anyhow::Result<()> {
    kiosk_testkit::init_test_tracing();
    let dir = tempfile::tempdir()?;
    let Some(sim) = SimAcceptor::start(dir.path()).await? else {
        return Ok(());
    };
    let mut port = Port::open(&sim)?;
    let first = port.ready().await?;
    let _renewer = port.renew();
    ensure!(sim.wait_inhibited(false, SOON).await, "ENABLE ignored");
    sim.coin(1).await?;
    let (line, _) = port.wait_for(SOON, |l| l.starts_with("CREDIT:")).await?;
    ensure!(line == "CREDIT:1:COIN:10", "{line:?}");

    // A reset (DTR, reset button): RAM other than .noinit is gone.
    sim.reset().await?;
    let second = port.ready().await?;
    ensure!(first != second, "same boot id {first} after a reset");
    ensure!(
        sim.wait_inhibited(false, SOON).await,
        "the renewed lease must enable the new boot"
    );
    // Every line after the new READY is the new boot's: seq starts over.
    sim.coin(2).await?;
    let (line, _) = port.wait_for(SOON, |l| l.starts_with("CREDIT:")).await?;
    ensure!(
        line == "CREDIT:1:COIN:20",
        "new boot's first credit: {line:?}"
    );

    // Another power-up (a new simulator) differs too.
    let other_dir = tempfile::tempdir()?;
    let Some(other) = SimAcceptor::start(other_dir.path()).await? else {
        return Ok(());
    };
    let mut other_port = Port::open(&other)?;
    let third = other_port.ready().await?;
    ensure!(
        third != first && third != second,
        "boot ids {first} {second} {third}"
    );
    Ok(())
}

//! kiosk-agent: runs on each kiosk (Raspberry Pi). Keeps one outbound MQTT
//! session to the broker, stores every print job in a durable sled inbox
//! before acknowledging it, and prints on ESC/POS printers.

pub mod cash;
pub mod config;
pub mod connection;
pub mod inbox;
pub mod intake;
pub mod notify;
pub mod printer;
pub mod render;
pub mod state;
pub mod status;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;
use connection::Stop;

/// Quiet time before a changed status is published, so bursts of changes
/// become one message.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(100);

/// How often finished inbox records past `store.retention` are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The inbox could not be opened or recovered.
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
    /// The MQTT session could not be set up.
    #[error("{0}")]
    Broker(String),
    /// The cash outbox could not be opened.
    #[error(transparent)]
    Cash(cash::outbox::OutboxError),
}

/// A running agent.
pub struct Agent {
    shutdown: CancellationToken,
    stop: watch::Sender<Stop>,
    tasks: Vec<JoinHandle<()>>,
    cash_stats: Option<Arc<cash::CashStats>>,
}

impl Agent {
    /// Opens the inbox (reporting jobs interrupted by a crash as `failed`),
    /// starts the MQTT session, the intake, one worker per printer and the
    /// status publisher. Returns at once; the session connects in the
    /// background and retries forever with backoff.
    ///
    /// # Errors
    /// [`AgentError`] when the store cannot be opened (for example while
    /// another agent holds it) or the MQTT session cannot be set up. The
    /// configuration was checked when it was loaded.
    pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        let db = inbox::Inbox::open_db(&config.store.path)?;
        let inbox = inbox::Inbox::open(&db)?;
        let recovered = inbox.recover()?;
        inbox.flush().await?;
        // Before any task starts: a failure here must leave nothing running.
        let outbox = match &config.cash {
            Some(_) => Some(
                cash::outbox::Outbox::open(&db)
                    .map_err(AgentError::Cash)?
                    .sharing(inbox.commit()),
            ),
            None => None,
        };

        let board = status::StatusBoard::new(config.printers.keys(), config.status.heartbeat);
        let (publisher, connection, forwarder) =
            connection::connect(&config, board.clone()).map_err(AgentError::Broker)?;
        for rec in &recovered {
            tracing::warn!(job_id = %rec.job_id, printer = %rec.printer, "job was printing when the agent stopped; reported failed: interrupted");
            if let Err(e) = publisher.publish_result(intake::result_of(rec)) {
                tracing::warn!(error = %e, "result queue full; the cloud will ask again");
            }
        }

        let shutdown = CancellationToken::new();
        let (stop, stop_rx) = watch::channel(Stop::Graceful);
        let mut tasks = Vec::new();
        // Holds every publish the broker may send before we acknowledge:
        // more than its in-flight window (rumqttd 100, mosquitto 20), so
        // the MQTT loop never waits on the intake.
        let (tx, rx) = mpsc::channel(1024);
        let connects = connection.connects();
        tasks.push(tokio::spawn(connection.run(tx, shutdown.clone(), stop_rx)));
        tasks.push(tokio::spawn(forwarder.run(shutdown.clone())));

        let mut wake = HashMap::new();
        let mut options_by_printer = HashMap::new();
        for (name, printer) in &config.printers {
            let notify = Arc::new(Notify::new());
            wake.insert(name.clone(), notify.clone());
            let options = printer.render_options();
            options_by_printer.insert(name.clone(), options.clone());
            let worker = worker::Worker {
                name: name.clone(),
                config: printer.clone(),
                driver: Some(printer::open(printer)),
                options,
                inbox: inbox.clone(),
                publisher: publisher.clone(),
                board: board.clone(),
                wake: notify,
                status_interval: config.print.status_interval,
            };
            tasks.push(tokio::spawn(worker.run(shutdown.clone())));
        }
        let mut intake = intake::Intake::new(
            &config,
            options_by_printer,
            inbox.clone(),
            publisher.clone(),
            wake,
            board.clone(),
        );
        let mut cash_stats = None;
        if let (Some(cash_config), Some(outbox)) = (&config.cash, outbox) {
            let (cash, states) = cash::Cash::open(outbox).map_err(AgentError::Cash)?;
            let recorded = Arc::new(Notify::new());
            let acceptor = cash::Acceptor {
                config: cash_config.clone(),
                cash: cash.clone(),
                board: board.clone(),
                recorded: recorded.clone(),
                stats: Arc::default(),
            };
            cash_stats = Some(acceptor.stats.clone());
            let sender = cash::Sender {
                cash: cash.clone(),
                states,
                publisher: publisher.clone(),
                recorded: recorded.clone(),
                connects: connects.clone(),
                resend_interval: cash_config.resend_interval,
            };
            tasks.push(tokio::spawn(acceptor.run(shutdown.clone())));
            tasks.push(tokio::spawn(sender.run(shutdown.clone())));
            intake.cash = Some(intake::CashLink {
                cash,
                sender: recorded,
            });
        }
        tasks.push(tokio::spawn(intake.run(rx, shutdown.clone())));
        tasks.push(tokio::spawn(publish_status(
            board,
            publisher,
            config.status.heartbeat,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(purge(
            inbox,
            config.store.retention,
            shutdown.clone(),
        )));
        let brokers: Vec<String> = config
            .broker_urls()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(kiosk = %config.kiosk_id, brokers = %brokers.join(","),
            printers = config.printers.len(), "agent started");
        Ok(Agent {
            shutdown,
            stop,
            tasks,
            cash_stats,
        })
    }

    /// Counters of the cash acceptor (credits recorded, garbled lines,
    /// credits that could not be recorded); `None` without `[cash]`.
    pub fn cash_stats(&self) -> Option<Arc<cash::CashStats>> {
        self.cash_stats.clone()
    }

    /// Stops cleanly: finishes a job being written, publishes `offline`,
    /// disconnects, and closes the store.
    pub async fn shutdown(self) {
        self.stop.send_replace(Stop::Graceful);
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        tracing::info!("agent stopped");
    }

    /// Stops as a crash would (for tests): tasks are dropped where they are,
    /// nothing is said to the broker, which publishes the last will.
    pub async fn kill(self) {
        self.stop.send_replace(Stop::Abrupt);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Publishes the `online` status on every change of the board and at
/// least every `heartbeat` (the gateway marks a kiosk offline after three
/// heartbeats of silence), while connected.
async fn publish_status(
    board: status::StatusBoard,
    publisher: connection::Publisher,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let mut changes = board.subscribe();
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the connection task publishes on connect.
    beat.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = beat.tick() => {}
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                // Coalesce bursts (a credit per line, a printer flapping)
                // into one retained status.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(STATUS_DEBOUNCE) => {}
                }
                changes.mark_unchanged();
                beat.reset();
            }
        }
        // While disconnected the connection task publishes a fresh status
        // on the next CONNACK.
        if board.connection_id().is_some()
            && let Err(e) = publisher.publish_status(&board.online_status())
        {
            tracing::warn!(error = %e, "publish not enqueued");
        }
    }
}

async fn purge(inbox: inbox::Inbox, retention: Duration, shutdown: CancellationToken) {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
        match inbox.purge(Utc::now() - retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "purged finished jobs past retention"),
            Err(e) => tracing::error!(error = %e, "inbox purge failed"),
        }
    }
}

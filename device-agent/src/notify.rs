//! systemd integration (`sd_notify(3)`) for the `Type=notify` unit that
//! Ansible installs (`ansible/roles/kiosk_agent`): `READY=1` once the agent
//! has started, `WATCHDOG=1` while its tasks are alive, `STOPPING=1` on
//! shutdown.
//!
//! Every notification is a no-op when the agent was not started by systemd
//! (`NOTIFY_SOCKET` unset), so it behaves the same from a shell, in tests and
//! under other supervisors. The watchdog is driven by `WatchdogSec=` in the
//! unit (`WATCHDOG_USEC` in the environment): the agent pings at half that
//! interval, as `sd_watchdog_enabled(3)` recommends, and stops pinging as
//! soon as one of its tasks has ended, so systemd kills and restarts it.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::Agent;

/// How often [`supervise`] checks the agent's tasks when systemd asked for
/// no watchdog.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Tells the service manager that the agent is up (`READY=1`).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Tells the service manager that the agent is shutting down (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Half the unit's `WatchdogSec=`, or `None` when systemd expects no
/// watchdog pings from this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

fn send(states: &[NotifyState<'_>]) {
    // A failed notification must not stop the agent: systemd will notice
    // the missing READY/WATCHDOG and act on its own.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

impl Agent {
    /// True while every task [`Agent::start`] spawned (MQTT session,
    /// intake, one worker per printer, status publisher, purge) is still
    /// running. Each of them is a loop that ends only on shutdown, so a
    /// finished task before that means it panicked and the agent is no
    /// longer whole.
    pub fn is_alive(&self) -> bool {
        self.tasks.iter().all(|task| !task.is_finished())
    }
}

/// Why [`supervise`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervised {
    /// `shutdown` was cancelled (SIGTERM, ctrl-c).
    Shutdown,
    /// A task of the agent ended on its own; no more watchdog pings were
    /// sent after it was noticed.
    Died,
}

/// Watches `agent` until `shutdown` is cancelled or one of its tasks ends,
/// sending `WATCHDOG=1` at [`watchdog_interval`] (when systemd enabled the
/// watchdog) after checking that every task is alive.
pub async fn supervise(agent: &Agent, shutdown: &CancellationToken) -> Supervised {
    let watchdog = watchdog_interval();
    if let Some(every) = watchdog {
        tracing::info!(every = ?every, "systemd watchdog enabled");
    }
    let mut tick = tokio::time::interval(watchdog.unwrap_or(CHECK_EVERY));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Supervised::Shutdown,
            _ = tick.tick() => {}
        }
        if !agent.is_alive() {
            return Supervised::Died;
        }
        if watchdog.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }
}

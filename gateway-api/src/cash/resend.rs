//! Sending `cash/control` to kiosks, and re-sending `disable(S)` while a
//! confirmation is awaited (DESIGN.md, "Cash credits", step 5).
//!
//! Controls are QoS 1 but MQTT delivery is not durable (see DESIGN.md,
//! "Delivery"), so every `delivery.republish_interval` the task here
//! re-sends `disable(S)` for each session still awaiting its kiosk's
//! confirmation while that kiosk is online (the kiosk answers each with a
//! `CashState`; repeats are harmless), and re-runs
//! [`CashStore::settle_ready`] (a gateway that stopped between storing a
//! credit and settling its session catches up here).

use std::sync::Arc;
use std::time::Duration;

use kiosk_schemas::{KioskId, Topic, wire};
use tokio_util::sync::CancellationToken;

use super::live::{Live, LiveEvent};
use super::store::CashStore;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::mqtt::MqttLink;

/// Publishes the controls `kiosk` must get now on `kiosk/<id>/cash/control`
/// ([`CashStore::with_controls`]): `disable(S)` for each session awaiting
/// confirmation, then `enable` for the open session or a plain `disable`;
/// with `disables_only`, only the `disable(S)`s. Failures are logged: the
/// kiosk gets its controls again on its next connection or timer tick.
pub fn send_controls(cash: &CashStore, link: &MqttLink, kiosk: &KioskId, disables_only: bool) {
    let topic = Topic::cash_control(kiosk);
    let sent = cash.with_controls(kiosk, disables_only, |control| {
        if let Err(e) = link.try_publish(&topic, false, wire::encode(control)) {
            tracing::warn!(kiosk = %kiosk, error = %e, "cash control not published");
        }
    });
    if let Err(e) = sent {
        tracing::error!(kiosk = %kiosk, error = %e, "cannot read sessions; cash control not sent");
    }
}

/// Settles what is ready for `kiosk`; returns the live events to publish
/// after the flush, and counts the settlements.
pub fn settle(cash: &CashStore, metrics: &Metrics, kiosk: &KioskId) -> Vec<(String, LiveEvent)> {
    match cash.settle_ready(kiosk) {
        Ok(done) => done
            .into_iter()
            .filter_map(|(change, how)| {
                metrics.settled(how);
                if let Some(s) = &change.session {
                    tracing::info!(session = %s.session_id, kiosk = %kiosk, state = s.state.as_str(),
                        change_due = s.change_due(), refund_due = s.refund_due(), "cash session final");
                }
                LiveEvent::of(&change)
            })
            .collect(),
        Err(e) => {
            tracing::error!(kiosk = %kiosk, error = %e, "cannot settle cash sessions");
            Vec::new()
        }
    }
}

/// The re-send timer.
pub struct Resend {
    /// Cash store.
    pub cash: CashStore,
    /// Presence.
    pub fleet: Arc<Fleet>,
    /// For controls.
    pub link: MqttLink,
    /// Live events.
    pub live: Arc<Live>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `delivery.republish_interval`.
    pub interval: Duration,
}

impl Resend {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.sweep().await,
            }
        }
    }

    async fn sweep(&self) {
        let kiosks = match self.cash.awaiting_kiosks() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot list sessions awaiting confirmation");
                return;
            }
        };
        let mut events = Vec::new();
        for kiosk in &kiosks {
            events.extend(settle(&self.cash, &self.metrics, kiosk));
        }
        if !events.is_empty() {
            if let Err(e) = self.cash.flush().await {
                tracing::error!(error = %e, "flush failed; settlements not announced");
                return;
            }
            for (id, ev) in events {
                self.live.publish(&id, ev);
            }
        }
        for kiosk in kiosks.iter().filter(|k| self.fleet.is_online(k)) {
            send_controls(&self.cash, &self.link, kiosk, true);
        }
    }
}

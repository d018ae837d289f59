//! Logging set-up for the broker's processes (`kiosk-broker`,
//! `kiosk-gateway`, the demo): `tracing` to stderr, filtered by `RUST_LOG`
//! (`EnvFilter` syntax), with rumqttd's routine messages demoted.
//!
//! rumqttd logs ordinary events at ERROR: a client dropping its socket or
//! timing out (`disconnected`), a session taken over by a new connection
//! with its client id (`router-drop`), a CONNECT its listener refused
//! (`Error while handling MQTT connect packet`). The front door logs each of
//! them itself, with the client's address (refusals, takeovers, accepted
//! logins). [`RumqttdRoutine`] hides those rumqttd lines unless rumqttd is
//! logged at debug (`RUST_LOG=info,rumqttd=debug`); every other rumqttd
//! error (its router, its listeners, out-of-order acks...) is shown as it
//! is.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt as tfmt};

/// rumqttd's messages (the `message` field, exactly) that report ordinary
/// events, logged by rumqttd at ERROR.
pub const RUMQTTD_ROUTINE: [&str; 4] = [
    "disconnected",
    "router-drop",
    "connection-stop",
    "Error while handling MQTT connect packet",
];

/// A per-layer filter that drops rumqttd's [`RUMQTTD_ROUTINE`] events
/// unless `show` (rumqttd logged at debug). Everything else passes.
#[derive(Debug, Clone, Copy)]
pub struct RumqttdRoutine {
    /// Show the routine events too.
    pub show: bool,
}

impl RumqttdRoutine {
    /// Shows the routine events when `directives` (`RUST_LOG` syntax) log
    /// rumqttd at debug or trace: a bare `debug`/`trace`, or
    /// `rumqttd…=debug|trace`.
    pub fn for_directives(directives: &str) -> Self {
        let show = directives.split(',').map(str::trim).any(|d| {
            let (target, level) = match d.split_once('=') {
                Some((target, level)) => (Some(target), level),
                None => (None, d),
            };
            let verbose =
                level.eq_ignore_ascii_case("debug") || level.eq_ignore_ascii_case("trace");
            verbose && target.is_none_or(|t| t.starts_with("rumqttd"))
        });
        RumqttdRoutine { show }
    }

    /// True when events with `metadata` may be routine ones to drop.
    fn applies(&self, metadata: &Metadata<'_>) -> bool {
        !self.show && metadata.target().starts_with("rumqttd") && *metadata.level() == Level::ERROR
    }
}

/// Collects an event's `message` field.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S> Filter<S> for RumqttdRoutine {
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if !self.applies(event.metadata()) {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        !RUMQTTD_ROUTINE.contains(&message.0.as_str())
    }
}

/// Installs the process's logger: `RUST_LOG`, or `default_directives`
/// when it is unset or invalid, to stderr, with [`RumqttdRoutine`].
/// Does nothing when a logger is installed already.
pub fn init(default_directives: &str) {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| default_directives.to_owned());
    let routine = RumqttdRoutine::for_directives(&directives);
    let filter = EnvFilter::new(&directives);
    let layer = tfmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter)
        .with_filter(routine);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_that_show_rumqttd_debug() {
        for (directives, show) in [
            ("info", false),
            ("info,rumqttd=warn", false),
            ("debug", true),
            ("info,rumqttd=debug", true),
            ("warn,rumqttd::server=trace", true),
            ("info,kiosk_broker=debug", false),
        ] {
            assert_eq!(
                RumqttdRoutine::for_directives(directives).show,
                show,
                "{directives}"
            );
        }
    }

    /// The routine lines are dropped, real rumqttd errors and everything
    /// of other crates pass; captured through a real subscriber.
    #[test]
    fn routine_rumqttd_errors_are_dropped_real_ones_kept() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let layer = tfmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(EnvFilter::new("info"))
            .with_filter(RumqttdRoutine::for_directives("info"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rumqttd::server::broker", error = "Io(UnexpectedEof)", "disconnected");
            tracing::error!(target: "rumqttd::server::broker", "router-drop");
            tracing::error!(target: "rumqttd::router::routing", "no space for new connection");
            tracing::error!(target: "kiosk_broker::front", "disconnected");
        });
        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("no space for new connection"), "{out}");
        assert!(out.contains("kiosk_broker::front"), "{out}");
        assert!(!out.contains("router-drop"), "{out}");
        assert!(!out.contains("UnexpectedEof"), "{out}");
    }
}

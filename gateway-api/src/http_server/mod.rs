//! The HTTP server: our own accept loop in front of hyper's HTTP/1.1
//! connections, plain or TLS (`http.tls_cert`), with the limits of `[http]`
//! (issue 10, finding 4: idle sockets must not take the process down).
//!
//! For each connection, in order:
//!
//! 1. **max connections** (`http.max_connections`, lowered at start to a
//!    quarter of what the open-files limit leaves, see
//!    [`effective_max_connections`]) and **per address**
//!    (`http.max_connections_per_address`, IPv6 by /64, see
//!    [`AddressCounts`]): over either, the socket is closed right after
//!    accept;
//! 2. the **TLS handshake** on HTTPS, in the connection's own task, and the
//!    headers of the first request, both within `http.header_read_timeout`
//!    of the accept;
//! 3. hyper serves requests (keep-alive) while a watchdog enforces, from
//!    the connection's [`Activity`]: the headers of a later request within
//!    `http.header_read_timeout` of their first byte, and no more than
//!    `http.idle_timeout` without a byte either way (between requests, a
//!    stalled request body, an event stream nobody reads).
//!
//! hyper's own `header_read_timeout` is off: it restarts at the end of every
//! response, so it would also be the keep-alive idle timeout.
//!
//! Event streams take a permit of `http.max_sse_streams` for their whole
//! life ([`Limits::open_stream`]); without one the request gets `503
//! too_many_streams`.
//!
//! Every refusal is counted (`kiosk_http_connections_refused_total{reason}`,
//! [`Refusal`]) and logged with the client address, at most one warning per
//! reason and second, the rest at debug level. On shutdown the loop stops
//! accepting, idle connections close at once and busy ones after their
//! response (event streams end on the same token).

mod connection;
mod limits;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use connection::connection;

pub use connection::{Activity, ActivityState, Expiry, serve_connection};
pub use limits::{
    AddressCounts, AddressGuard, Admitted, Limits, Refusal, StreamPermit, Timeouts,
    effective_max_connections,
};

/// Serves `app` on `listener` until `shutdown`: plain HTTP, or HTTPS with
/// `tls`; returns when every connection has closed. See the module docs.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: back off a little
                // instead of spinning.
                if limits
                    .log
                    .check("accept", std::time::Instant::now())
                    .is_some()
                {
                    warn!(error = %e, "HTTP accept failed");
                } else {
                    debug!(error = %e, "HTTP accept failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let admitted = match limits.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(reason) => {
                drop(stream);
                limits.refuse(reason, Some(peer));
                continue;
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            acceptor.clone(),
            app.clone(),
            admitted,
            limits.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

//! HTTPS for the API (`http.tls_cert`, `http.tls_key`) and TLS for the
//! gateway's own MQTT sessions to an external `mqtts://` broker
//! (`broker.ca_file`). Both use rustls with the `ring` provider through
//! [`kiosk_broker::tls`].
//!
//! TLS handshakes run in their own tasks with a timeout, never in the
//! accept loop: one client that never finishes its handshake must not stop
//! every other connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;

/// How long an HTTPS client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 256;

/// Why a TLS configuration could not be built.
pub type TlsError = kiosk_broker::tls::TlsError;

/// The HTTPS server configuration, when `http.tls_cert` is set.
///
/// # Errors
/// [`TlsError`] naming the certificate or key file at fault.
pub fn https_config(config: &GatewayConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let server = kiosk_broker::tls::server_config(cert, key, None)?;
            let mut server = Arc::unwrap_or_clone(server);
            server.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Some(Arc::new(server)))
        }
        _ => Ok(None),
    }
}

/// The TLS client configuration for an external `mqtts://` broker: only
/// `broker.ca_file`'s CA, or the system trust store without it.
///
/// # Errors
/// [`TlsError`] naming the CA file at fault.
pub fn mqtt_client_config(config: &GatewayConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    kiosk_broker::tls::client_config(config.broker.ca_file.as_deref(), None)
}

/// Serves `app` on `listener` until `shutdown`: plain HTTP, or HTTPS with
/// `tls`.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
) {
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, TlsAcceptor::from(tls), shutdown.clone());
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// A listener that hands axum finished TLS connections; handshakes run in
/// their own tasks.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor, shutdown: CancellationToken) -> Self {
        let local = listener.local_addr();
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor task ends only at shutdown; axum stops calling
            // accept once graceful shutdown begins, so wait for it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

//! Setting up the public listeners: binding with a large backlog, the
//! connection limit that fits the open-files limit, the startup log line.

use std::io;
use std::net::SocketAddr;

use tracing::{info, warn};

use crate::fds;

/// Binds a listener with a large accept backlog (a fleet reconnecting at
/// once must queue in our process, not be dropped by the kernel).
///
/// # Errors
/// The bind or listen error.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Logs where the front door listens.
pub(crate) fn log_listening(
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    internal: &[SocketAddr],
) {
    info!(?plain, ?tls, ?internal, "MQTT front door listening");
}

/// `max_connections`, lowered (with a warning) to what the open-files
/// limit allows after `reserved_fds` the host process needs for itself
/// (the gateway's HTTP connections): running out of descriptors would make
/// rumqttd's accept loop spin on `EMFILE`.
pub(crate) fn effective_max_connections(max_connections: usize, reserved_fds: u64) -> usize {
    let Some(limit) = fds::open_files_limit() else {
        return max_connections;
    };
    let fits = fds::connections_fitting(limit, reserved_fds, fds::BROKER_FDS_PER_CONNECTION);
    if fits < max_connections {
        warn!(
            limit,
            reserved_fds,
            max_connections,
            capped_to = fits,
            "the open-files limit is too low for max_connections (3 descriptors per connection): raise it (systemd LimitNOFILE) or lower max_connections"
        );
        return fits;
    }
    max_connections
}

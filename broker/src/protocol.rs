//! The per-connection protocol seam: where the topic ACL will sit.

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{self, Packet, Protocol};
use tracing::warn;

/// MQTT 3.1.1 codec of the fleet's listener: today it delegates every call to
/// rumqttd's [`V4`].
///
/// # Why it exists
///
/// rumqttd authenticates but has no authorization. Its
/// [`Server`](rumqttd::Server) clones the protocol value once per accepted
/// connection, and calls [`Protocol::read_mut`] for every packet the client
/// sends, CONNECT first, before the router sees it. A clone therefore lives
/// exactly as long as one connection and sees, in order, its CONNECT (client
/// id, username), every SUBSCRIBE (filters) and every PUBLISH (topic). That is
/// the seam for the topic ACL (later issue; DESIGN.md "Topics", default
/// ACL): remember the username from CONNECT in the clone, look its role up in
/// the [`CredentialStore`](crate::CredentialStore), and check each filter and
/// topic. A denied packet can be answered by returning a
/// [`protocol::Error`], which makes rumqttd close the connection (rumqttd
/// gives a codec no way to send a SUBACK failure or drop a single PUBLISH).
///
/// Today the only thing it adds is a log line for anonymous CONNECTs, which
/// rumqttd refuses before calling the authentication handler (so that
/// handler cannot log them).
#[derive(Debug, Clone)]
pub struct FleetProtocol {
    inner: V4,
}

impl FleetProtocol {
    /// A codec for one listener; rumqttd clones it for each connection.
    pub fn new() -> Self {
        FleetProtocol { inner: V4 }
    }
}

impl Default for FleetProtocol {
    fn default() -> Self {
        Self::new()
    }
}

impl Protocol for FleetProtocol {
    fn read_mut(
        &mut self,
        stream: &mut BytesMut,
        max_size: usize,
    ) -> Result<Packet, protocol::Error> {
        let packet = self.inner.read_mut(stream, max_size)?;
        if let Packet::Connect(connect, _, _, _, None) = &packet {
            warn!(client_id = ?connect.client_id, username = ?None::<&str>, reason = "no username and password", "login refused");
        }
        Ok(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, protocol::Error> {
        self.inner.write(packet, write)
    }
}

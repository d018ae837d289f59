//! The first packet of a connection: reading the CONNECT (rumqttd's own v4
//! codec) and the CONNACK that refuses it.

use std::io;

use bytes::BytesMut;
use rumqttd::protocol::v4::{self, V4};
use rumqttd::protocol::{self, Packet, Protocol};
use tokio::io::AsyncReadExt;

use super::Io;

/// Why no CONNECT could be read.
pub(super) enum ConnectError {
    /// The client closed the connection first.
    Closed,
    /// Reading failed.
    Io(io::Error),
    /// The CONNECT is larger than the limit.
    TooLarge,
    /// A CONNECT of another protocol level than MQTT 3.1.1's.
    ProtocolVersion,
    /// Not an MQTT packet.
    Protocol,
}

/// Largest CONNECT packet read, in bytes.
pub(super) const MAX_CONNECT_BYTES: usize = 64 * 1024;

/// Reads until one whole packet is buffered and decodes it with rumqttd's
/// v4 codec. Returns the packet and the bytes the client pipelined after
/// it (for rumqttd).
pub(super) async fn read_connect(
    io: &mut Box<dyn Io>,
    max_packet: usize,
) -> Result<(Packet, BytesMut), ConnectError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match v4::check(buf.iter(), max_packet) {
            Ok(_) => {
                // Decoding consumes the frame; the rest is pipelined.
                return match V4.read_mut(&mut buf, max_packet) {
                    Ok(packet) => Ok((packet, buf)),
                    Err(protocol::Error::InvalidProtocolLevel(_)) => {
                        Err(ConnectError::ProtocolVersion)
                    }
                    Err(_) => Err(ConnectError::Protocol),
                };
            }
            Err(protocol::Error::InsufficientBytes(_)) => {}
            Err(protocol::Error::PayloadSizeLimitExceeded(_)) => {
                return Err(ConnectError::TooLarge);
            }
            Err(_) => return Err(ConnectError::Protocol),
        }
        match io.read_buf(&mut buf).await {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
}

/// A CONNACK refusing the login with `return_code` (MQTT 3.1.1 section
/// 3.2: packet type 2, remaining length 2, no session present).
pub(super) fn connack(return_code: u8) -> [u8; 4] {
    [0x20, 0x02, 0x00, return_code]
}

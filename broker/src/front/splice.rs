//! Copying bytes between an admitted client and rumqttd: [`splice`] and its
//! two [`Pump`]s, and the [`Upstream`] connection that holds a slot until
//! rumqttd answers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Io;

/// How long a connection whose client closed its side may still receive
/// what the broker sends.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Copies bytes both ways until the broker closes, the client closed and
/// the grace period passed, or `token` is cancelled.
pub(super) async fn splice(
    mut client: Box<dyn Io>,
    mut upstream: Upstream,
    token: &CancellationToken,
) {
    /// What ended the copying.
    enum Ended {
        /// The client closed its side (or failed): the broker gets a grace
        /// period to send what is left.
        Client,
        /// The broker closed or failed: the connection is over.
        Broker,
    }
    let mut to_broker = Pump::default();
    let mut to_client = Pump::default();
    let mut client_side_done = false;
    let copying = std::future::poll_fn(|cx| {
        if !client_side_done
            && to_broker
                .poll(cx, Pin::new(&mut client), Pin::new(&mut upstream))
                .is_ready()
        {
            client_side_done = true;
            return Poll::Ready(Ended::Client);
        }
        if to_client
            .poll(cx, Pin::new(&mut upstream), Pin::new(&mut client))
            .is_ready()
        {
            return Poll::Ready(Ended::Broker);
        }
        Poll::Pending
    });
    tokio::pin!(copying);
    let mut client_closed = false;
    // Armed when the client closes its side.
    let grace = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            ended = &mut copying => match ended {
                Ended::Broker => return,
                Ended::Client => {
                    client_closed = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + HALF_CLOSE_GRACE);
                }
            },
            () = &mut grace, if client_closed => return,
        }
    }
}

/// Bytes read per poll, on the stack of the poll: an idle connection holds
/// no copy buffer at all.
const PUMP_CHUNK: usize = 8 * 1024;
/// Reads per poll before yielding, so one busy connection cannot hold a
/// worker thread.
const PUMP_READS_PER_POLL: usize = 16;

/// One direction of [`splice`]: reads into a buffer on the stack and writes
/// it on at once; only what the other side cannot take yet is kept, in a
/// heap buffer freed as soon as it is written. Idle connections (almost
/// all of a fleet's) so cost no copy buffers, where `tokio::io::copy`
/// keeps 8 KiB per direction for the connection's whole life.
#[derive(Debug, Default)]
struct Pump {
    /// Read but not yet written.
    pending: Vec<u8>,
    /// Bytes of `pending` written.
    written: usize,
    /// Written since the last flush (TLS buffers writes).
    unflushed: bool,
    /// The reader reached end of stream.
    eof: bool,
}

impl Pump {
    /// Copies until `from` ends (then shuts `to` down) or fails: then
    /// `Ready`, with the error, if any, already irrelevant to the caller
    /// (the direction is over either way).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut impl AsyncRead>,
        mut to: Pin<&mut impl AsyncWrite>,
    ) -> Poll<io::Result<()>> {
        for _ in 0..PUMP_READS_PER_POLL {
            while self.written < self.pending.len() {
                match std::task::ready!(to.as_mut().poll_write(cx, &self.pending[self.written..])) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => self.written += n,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.written = 0;
                self.unflushed = true;
            }
            if self.unflushed {
                std::task::ready!(to.as_mut().poll_flush(cx))?;
                self.unflushed = false;
            }
            if self.eof {
                return to.as_mut().poll_shutdown(cx);
            }
            let mut chunk = [0u8; PUMP_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            std::task::ready!(from.as_mut().poll_read(cx, &mut buf))?;
            let data = buf.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            let mut written = 0;
            while written < data.len() {
                match to.as_mut().poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Keep the rest; the writer wakes us.
                        self.pending = data[written..].to_vec();
                        return Poll::Pending;
                    }
                }
            }
            self.unflushed = true;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The connection to rumqttd. Holds an upstream slot until rumqttd first
/// answers (its CONNACK) or closes, i.e. until it has accepted the
/// connection.
pub(super) struct Upstream {
    pub(super) stream: TcpStream,
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() {
            self.slot = None;
            quick_ack(&self.stream);
        }
        polled
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Acknowledges what rumqttd sent at once. rumqttd leaves Nagle's
/// algorithm on for the sockets it accepts, so a small packet it writes
/// while an earlier one is unacknowledged waits for our ACK, which Linux
/// delays by up to 40 ms; TCP_QUICKACK (not sticky, hence after every read)
/// takes that stall off the broker → kiosk path.
#[cfg(target_os = "linux")]
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn quick_ack(_stream: &TcpStream) {}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A megabyte through a writer that takes 61 bytes at a time arrives
    /// whole and in order; the end of the reader shuts the writer down; the
    /// pending buffer is gone once written.
    #[tokio::test]
    async fn pump_copies_everything_in_order_through_a_slow_writer() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut source, mut from) = tokio::io::duplex(64 * 1024);
        let (mut to, mut sink) = tokio::io::duplex(61);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            source.write_all(&sent).await.unwrap();
            source.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            sink.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut pump = Pump::default();
        std::future::poll_fn(|cx| pump.poll(cx, Pin::new(&mut from), Pin::new(&mut to)))
            .await
            .unwrap();
        assert!(pump.pending.capacity() == 0, "no buffer kept");
        drop(to);
        writer.await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
    }

    /// An idle pump holds no buffer: a read that is pending allocates
    /// nothing.
    #[tokio::test]
    async fn an_idle_pump_holds_no_buffer() {
        let (_source, mut from) = tokio::io::duplex(1024);
        let (mut to, _sink) = tokio::io::duplex(1024);
        let mut pump = Pump::default();
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(pump.poll(cx, Pin::new(&mut from), Pin::new(&mut to)))
        })
        .await;
        assert!(polled.is_pending());
        assert_eq!(pump.pending.capacity(), 0);
    }
}

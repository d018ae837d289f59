//! A small rumqttc client for tests: connects once (no reconnect), so a
//! refused login or a disconnect by the broker is visible.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

/// A connected test client.
pub struct Client {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Publish>,
    closed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and waits for a successful CONNACK (5 s).
    ///
    /// # Errors
    /// The connection error when the broker refuses or closes the
    /// connection instead of accepting it.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Client, String> {
        let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        opts.set_credentials(username, password)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 << 20, 4 << 20);
        Self::connect_with(opts).await
    }

    /// Connects with the given options (e.g. without credentials).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(opts: MqttOptions) -> Result<Client, String> {
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return if ack.code == rumqttc::ConnectReturnCode::Success {
                            Ok(())
                        } else {
                            Err(format!("refused: {:?}", ack.code))
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK within 5s".to_owned())?;
        first?;
        let (tx, incoming) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        flag.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            }
        });
        Ok(Client {
            client,
            incoming,
            closed,
            task,
        })
    }

    /// Publishes JSON with QoS 1.
    pub async fn publish(&self, topic: &str, body: &Value) {
        self.publish_bytes(topic, serde_json::to_vec(body).unwrap_or_default())
            .await;
    }

    /// Publishes bytes with QoS 1.
    pub async fn publish_bytes(&self, topic: &str, payload: Vec<u8>) {
        let _ = self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await;
    }

    /// Subscribes with QoS 1.
    pub async fn subscribe(&self, filter: &str) {
        let _ = self.client.subscribe(filter, QoS::AtLeastOnce).await;
    }

    /// The next incoming publish, or `None` after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Publish> {
        tokio::time::timeout(timeout, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// True once the broker closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

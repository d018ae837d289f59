//! A TCP relay whose links a test can cut, stall or half-forget, like a
//! flaky network between a kiosk and the VPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What happens to the links open at the time of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Both sockets closed.
    Cut,
    /// No more bytes either way; both sockets stay open (no FIN, no RST).
    Blackhole,
    /// The kiosk side is closed, the broker side stays open and silent: a
    /// NAT that forgot the mapping, or a router reboot.
    Rebind,
}

/// Relays 127.0.0.1:<port> to an upstream address until dropped.
pub struct CutProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    generation: watch::Sender<(u64, Fault)>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Starts relaying to `upstream` on a free local port.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel((0u64, Fault::Cut));
        let gen_tx = generation.clone();
        let up2 = up.clone();
        let accepted2 = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                accepted2.fetch_add(1, Ordering::SeqCst);
                let mut fault = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let mut client = Some(client);
                    let what = tokio::select! {
                        _ = relay(client.as_mut(), &mut server) => return,
                        r = fault.changed() => match r {
                            Ok(()) => fault.borrow_and_update().1,
                            Err(_) => return,
                        },
                    };
                    match what {
                        Fault::Cut => return,
                        Fault::Blackhole => {}
                        Fault::Rebind => drop(client.take()),
                    }
                    // Hold what is left open, silent, until a cut or the
                    // proxy is dropped.
                    while fault.changed().await.is_ok() {
                        if fault.borrow_and_update().1 == Fault::Cut {
                            break;
                        }
                    }
                });
            }
        });
        Ok(CutProxy {
            addr,
            up,
            accepted,
            generation,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections relayed so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn fault(&self, fault: Fault) {
        self.generation.send_modify(|g| *g = (g.0 + 1, fault));
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.fault(Fault::Cut);
    }

    /// Stalls every relayed connection: no byte passes either way and
    /// neither side is closed (no FIN, no RST), so both ends only notice
    /// through their keep alive. New connections are relayed as before.
    pub fn blackhole(&self) {
        self.fault(Fault::Blackhole);
    }

    /// Forgets every relayed connection on the kiosk side only: the client
    /// socket is closed (the client reconnects at once), the upstream one
    /// stays open and silent (the broker holds the old connection until its
    /// keep alive runs out). New connections are relayed as before.
    pub fn rebind(&self) {
        self.fault(Fault::Rebind);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn relay(client: Option<&mut TcpStream>, server: &mut TcpStream) {
    if let Some(client) = client {
        let _ = tokio::io::copy_bidirectional(client, server).await;
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.fault(Fault::Cut);
    }
}

//! The live client connections, by id and by client id: for takeovers
//! (MQTT-3.1.4-2) and for revoking the sessions of changed credentials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::credentials::CredentialStore;

/// One live client connection.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) username: String,
    pub(super) client_id: String,
    pub(super) peer: SocketAddr,
    pub(super) fingerprint: u64,
    pub(super) token: CancellationToken,
}

/// Live connections by id, and the newest by client id.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    next: AtomicU64,
    live: Mutex<LiveTable>,
}

#[derive(Debug, Default)]
struct LiveTable {
    by_id: HashMap<u64, Live>,
    /// The newest connection of each client id: a login is a lookup here,
    /// not a scan of every connection (a fleet reconnecting at once).
    by_client: HashMap<String, u64>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveTable> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `live`; returns its id and, when a live connection with
    /// the same client id exists, that connection's address.
    pub(super) fn insert(&self, live: Live) -> (u64, Option<SocketAddr>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut table = self.lock();
        // An empty client id gets a unique one from rumqttd.
        let taken_over = if live.client_id.is_empty() {
            None
        } else {
            table
                .by_client
                .insert(live.client_id.clone(), id)
                .and_then(|old| table.by_id.get(&old))
                .map(|old| old.peer)
        };
        table.by_id.insert(id, live);
        (id, taken_over)
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().take(id);
    }

    /// Removes and returns the sessions whose credentials changed.
    pub(super) fn revoked(&self, credentials: &CredentialStore) -> Vec<Live> {
        let mut table = self.lock();
        let gone: Vec<u64> = table
            .by_id
            .iter()
            .filter(|(_, l)| credentials.fingerprint(&l.username) != Some(l.fingerprint))
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter().filter_map(|id| table.take(id)).collect()
    }
}

impl LiveTable {
    /// Removes connection `id` (and its client id's entry, if it is the
    /// newest).
    fn take(&mut self, id: u64) -> Option<Live> {
        let live = self.by_id.remove(&id)?;
        if self.by_client.get(&live.client_id) == Some(&id) {
            self.by_client.remove(&live.client_id);
        }
        Some(live)
    }
}

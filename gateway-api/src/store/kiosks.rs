//! What the gateway knows about each kiosk (tree `kiosks`), read and
//! written by [`crate::fleet::Fleet`].

use std::collections::BTreeMap;

use kiosk_schemas::{KioskId, Presence, PrinterStatus, Timestamp};
use serde::{Deserialize, Serialize};

use sled::Transactional as _;

use super::{Store, StoreError, decode, encode};
use crate::events::FleetEventKind;

/// Version of [`KioskRecord`].
const KIOSK_V: u8 = 1;

/// What the gateway knows about a kiosk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KioskRecord {
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// Last reported presence.
    pub presence: Option<Presence>,
    /// Last time any message from the kiosk arrived.
    pub last_seen: Option<Timestamp>,
    /// Agent version from its last `online` status.
    pub agent_version: Option<String>,
    /// Printers from its last `online` status (JSON of the map, because
    /// postcard cannot skip absent optional fields).
    pub printers_json: String,
    /// Cash acceptor state from its last status (JSON), if any.
    pub cash_json: Option<String>,
}

impl KioskRecord {
    /// A record for a kiosk never heard from.
    pub fn new(kiosk_id: KioskId) -> Self {
        KioskRecord {
            kiosk_id,
            presence: None,
            last_seen: None,
            agent_version: None,
            printers_json: "{}".to_owned(),
            cash_json: None,
        }
    }

    /// The printers map.
    pub fn printers(&self) -> BTreeMap<String, PrinterStatus> {
        serde_json::from_str(&self.printers_json).unwrap_or_default()
    }
}

impl Store {
    /// Reads a kiosk's record.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn kiosk(&self, kiosk: &KioskId) -> Result<Option<KioskRecord>, StoreError> {
        let key = kiosk.as_str().as_bytes();
        match self.kiosks.get(key)? {
            Some(v) => Ok(Some(decode(KIOSK_V, key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every kiosk record, ordered by id.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn kiosks(&self) -> Result<Vec<KioskRecord>, StoreError> {
        self.kiosks
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(KIOSK_V, &k, &v)
            })
            .collect()
    }

    /// Writes a kiosk's record.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn put_kiosk(&self, rec: &KioskRecord) -> Result<(), StoreError> {
        self.put_kiosk_with(rec, &[])
    }

    /// Writes a kiosk's record and the events its change caused (`type`,
    /// `data`), in one transaction.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn put_kiosk_with(
        &self,
        rec: &KioskRecord,
        events: &[(FleetEventKind, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let bytes = encode(KIOSK_V, rec.kiosk_id.as_str(), rec)?;
        let key = rec.kiosk_id.as_str().as_bytes();
        if events.is_empty() {
            self.kiosks.insert(key, bytes)?;
            return Ok(());
        }
        let log = &self.events;
        (&self.kiosks, log.tree())
            .transaction(|(kiosks, tx)| {
                kiosks.insert(key, bytes.as_slice())?;
                for (kind, data) in events {
                    log.append(tx, kind.name(), Some(&rec.kiosk_id), data.clone())?;
                }
                Ok(())
            })
            .map_err(StoreError::from)
    }
}

//! Listing jobs newest first, a page at a time, through the indexes of
//! [`super::index`]: a page reads the entries it shows (and those the
//! filters on top skip), never the whole store.

use std::ops::Bound;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kiosk_schemas::{JobState, KioskId, Timestamp};
use kiosk_store::keys;

use super::index::{Position, time_key};
use super::records::{JobRecord, decode_job};
use crate::store::{Store, StoreError};

/// Version byte of a [`Cursor`]'s encoding.
const CURSOR_V: u8 = 1;

/// Which jobs a listing shows; every field set narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only this kiosk's jobs (index `jobs_by_kiosk`, unless `states`).
    pub kiosk: Option<KioskId>,
    /// Only jobs for this logical printer (checked on each job the index
    /// chosen yields: a rare printer costs a longer walk).
    pub printer: Option<String>,
    /// Only jobs in one of these states; empty: any (index
    /// `jobs_by_state`, one range per state, merged newest first; `kiosk`
    /// is then checked on each job).
    pub states: Vec<JobState>,
    /// Only jobs stored strictly after this instant (`accepted_at`).
    pub created_after: Option<Timestamp>,
    /// Only jobs stored strictly before this instant (`accepted_at`).
    pub created_before: Option<Timestamp>,
}

impl JobFilter {
    fn matches(&self, rec: &JobRecord) -> bool {
        self.kiosk.as_ref().is_none_or(|k| *k == rec.kiosk_id)
            && self.printer.as_ref().is_none_or(|p| *p == rec.printer)
            && (self.states.is_empty() || self.states.contains(&rec.state))
            && self.created_after.is_none_or(|t| rec.accepted_at > t)
            && self.created_before.is_none_or(|t| rec.accepted_at < t)
    }
}

/// Where a page ended: the position (time and id) of its last job. The
/// next page starts after it, so jobs created meanwhile (which sort
/// first) neither shift nor repeat what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(Position);

impl Cursor {
    /// The cursor as the API shows it: base64url (no padding) of a version
    /// byte and the position. Opaque to callers.
    pub fn encode(&self) -> String {
        let mut bytes = vec![CURSOR_V];
        bytes.extend_from_slice(self.0.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads back what [`Cursor::encode`] wrote; `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        match bytes.split_first() {
            Some((&CURSOR_V, pos)) => Position::from_bytes(pos).map(Cursor),
            _ => None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The jobs, newest first (by `accepted_at`, then job id).
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts; `None` when no job follows.
    pub next: Option<Cursor>,
}

/// Bounds of a range of keys.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The range of `tree` keys under `prefix` whose positions are after
/// `cursor` and within `filter`'s times; `None` when it is empty.
fn range_of(prefix: &[u8], filter: &JobFilter, cursor: Option<&Cursor>) -> Option<KeyRange> {
    let with = |tail: &[u8]| [prefix, tail].concat();
    // Positions sort newest first: "before t" is a lower bound.
    let mut lo = match filter.created_before.map(time_key) {
        Some(t) => {
            let t = keys::read_u64(&t).checked_add(1)?;
            Bound::Included(with(&keys::be_u64(t)))
        }
        None if prefix.is_empty() => Bound::Unbounded,
        None => Bound::Included(prefix.to_vec()),
    };
    if let Some(c) = cursor {
        let after = with(c.0.as_bytes());
        let tighter = match &lo {
            Bound::Included(k) => after >= *k,
            _ => true,
        };
        if tighter {
            lo = Bound::Excluded(after);
        }
    }
    let hi = match filter.created_after.map(time_key) {
        Some(t) => Bound::Excluded(with(&t)),
        None => match prefix.split_last() {
            // `scope \0` ends before `scope \1`.
            Some((_, scope)) => Bound::Excluded([scope, &[1]].concat()),
            None => Bound::Unbounded,
        },
    };
    let empty = match (&lo, &hi) {
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h)) => l >= h,
        _ => false,
    };
    (!empty).then_some((lo, hi))
}

impl Store {
    /// Up to `limit` (at least 1) jobs that match `filter`, newest first (by
    /// `accepted_at`, ties by job id), after `cursor` (where the previous
    /// page ended). Reads the index entries from the cursor on: about
    /// `limit` of them when only `kiosk`, `states` and the times filter.
    /// Jobs created while a caller pages sort before its cursor; every job
    /// that existed at the first page, and still matches, comes exactly
    /// once. Entries without their job record (a creation under way or
    /// cut short, a purge cut short) are skipped.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure or an unreadable record.
    pub fn list_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let (tree, prefixes) = if !filter.states.is_empty() {
            let mut states: Vec<JobState> = filter.states.clone();
            states.sort_by_key(|s| s.as_str());
            states.dedup();
            let prefixes = states.iter().map(|s| keys::prefix(s.as_str())).collect();
            (&self.by_state, prefixes)
        } else if let Some(kiosk) = &filter.kiosk {
            (&self.by_kiosk, vec![keys::prefix(kiosk.as_str())])
        } else {
            (&self.by_time, vec![Vec::new()])
        };
        let mut ranges: Vec<_> = prefixes
            .iter()
            .filter_map(|p| range_of(p, filter, cursor).map(|r| (p.len(), tree.range(r))))
            .collect();
        let mut heads = Vec::with_capacity(ranges.len());
        for (skip, range) in &mut ranges {
            heads.push(next_position(range, *skip)?);
        }
        let mut jobs = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        // The newest head (smallest position) of the merged ranges.
        let newest = |heads: &[Option<Vec<u8>>]| {
            (0..heads.len())
                .filter(|i| heads[*i].is_some())
                .min_by(|a, b| heads[*a].cmp(&heads[*b]))
        };
        while let Some(i) = newest(&heads) {
            let (skip, range) = &mut ranges[i];
            let next = next_position(range, *skip)?;
            let Some(bytes) = std::mem::replace(&mut heads[i], next) else {
                break;
            };
            // A job that moved between two states listed while it did.
            if last.as_ref() == Some(&bytes) {
                continue;
            }
            let Some(pos) = Position::from_bytes(&bytes) else {
                continue;
            };
            last = Some(bytes);
            let Some(stored) = self.jobs.get(pos.job_key())? else {
                continue;
            };
            let rec = decode_job(pos.job_key(), &stored)?;
            if Position::of(&rec) != pos || !filter.matches(&rec) {
                continue;
            }
            if jobs.len() == limit {
                // One more matches: the page is full and not the last.
                let next = jobs.last().map(|r: &JobRecord| Cursor(Position::of(r)));
                return Ok(Page { jobs, next });
            }
            jobs.push(rec);
        }
        Ok(Page { jobs, next: None })
    }
}

/// The position of the next key of `range`, whose first `skip` bytes are
/// the index's prefix.
fn next_position(range: &mut sled::Iter, skip: usize) -> Result<Option<Vec<u8>>, StoreError> {
    match range.next() {
        Some(item) => {
            let (key, _) = item?;
            Ok(Some(key.get(skip..).unwrap_or_default().to_vec()))
        }
        None => Ok(None),
    }
}

//! The change log and event bodies: reading records with their bodies,
//! and retention, which removes old records and the bodies nothing refers
//! to any more.
//!
//! Each body is written once, under a fresh [`BodyId`], and referred to by
//! at most three things: the record that introduced it (its `event`), the
//! event's head while it is the current body, and the record that replaced
//! it (its `previous`). Records are removed oldest first, so a body's last
//! reference to go is known without counting:
//! - a live event's body is always replaced by a record that names it as
//!   `previous` (an update, a deletion, a sweep or purge tombstone): it is
//!   freed when that record is removed;
//! - a cancelled body (a deletion's `event`: Google's tombstone, kept as
//!   the head of a hidden occurrence of a series) is replaced without being
//!   named (the occurrence coming back is `created`, with no `previous`):
//!   it is freed when its `deleted` record is removed if the head no
//!   longer holds it, or, when the head lets go of it after that record
//!   was removed, at once by the page that does (`page.rs`).
//!
//! A deleted event's head is removed with the deletion, except a hidden
//! occurrence's, which stays so that the next full sync does not report it
//! again; bodies held by heads are never freed.

use std::collections::{BTreeSet, HashSet};

use serde::Deserialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::heads::Head;
use super::{
    decode, keys, BodyId, CalendarKey, ChangeKind, ChangeRecord, FeedRead, Filter, Seq, Store,
    StoreError, Trees, CHUNK_EVENTS, PRUNED_KEY,
};
use crate::rawjson::RawJson;
use crate::time::Timestamp;

/// Records a filtered read looks at, at most, so that a filter that
/// matches little never has one read scan the whole feed.
pub const MAX_SCAN: usize = 10_000;

impl Trees {
    /// See [`Store::read_feed`].
    fn matching(
        &self,
        after: Seq,
        upto: Seq,
        limit: usize,
        filter: &Filter,
    ) -> Result<(Vec<ChangeRecord>, Seq), StoreError> {
        let mut out = Vec::new();
        let mut through = after;
        if after == Seq::MAX {
            return Ok((out, through));
        }
        let scan = if filter.is_empty() { limit } else { MAX_SCAN };
        for item in self.changes.range(keys::seq(after.next())..).take(scan) {
            let (k, v) = item?;
            let r: ChangeRecord<BodyId> = decode("changes", &k, &v)?;
            if r.seq > upto {
                break;
            }
            through = r.seq;
            if filter.matches(&r.account, &r.calendar_id) {
                let seq = r.seq;
                out.push(r.map_bodies(|id| self.body(id, &|| format!("change record {seq}")))?);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok((out, through))
    }

    /// The body `id`; a missing one is damage, named by the record or
    /// event that refers to it.
    pub(super) fn body(&self, id: BodyId, of: &dyn Fn() -> String) -> Result<RawJson, StoreError> {
        let k = keys::body(id);
        let bytes = self.bodies.get(k)?.ok_or_else(|| StoreError::Decode {
            tree: "bodies",
            key: id.to_string(),
            reason: format!("missing, but {} refers to it", of()),
        })?;
        decode("bodies", &k, &bytes)
    }
}

impl Store {
    /// The body `id` as Google sent it.
    pub fn body(&self, id: BodyId) -> Result<RawJson, StoreError> {
        self.t()?.body(id, &|| "a caller".into())
    }

    /// Up to `limit` change records with `seq > after`, ascending, with
    /// their bodies.
    pub fn changes_after(&self, after: Seq, limit: usize) -> Result<Vec<ChangeRecord>, StoreError> {
        Ok(self
            .t()?
            .matching(after, Seq::MAX, limit, &Filter::default())?
            .0)
    }

    /// What a reader at `after` gets: up to `limit` records with
    /// `after < seq <= upto` that `filter` keeps, with their bodies (read
    /// only for those), and the last seq looked at; a filtered read looks
    /// at most at [`MAX_SCAN`] records. [`FeedRead::Gone`] when retention
    /// removed records after `after`.
    pub fn read_feed(
        &self,
        after: Seq,
        upto: Seq,
        limit: usize,
        filter: &Filter,
    ) -> Result<FeedRead, StoreError> {
        let t = self.t()?;
        let (records, through) = t.matching(after, upto, limit, filter)?;
        // Retention only removes the oldest records, so reading the floor
        // after the records tells whether any record after `after` was gone.
        let pruned = t.pruned_through()?;
        Ok(if after < pruned {
            FeedRead::Gone(pruned)
        } else {
            FeedRead::Records(records, through)
        })
    }

    /// The highest `seq` stored (0 for an empty log), the seq floor set
    /// when a corrupt store was replaced, or the highest seq retention
    /// removed, whichever is highest: the next record gets `last_seq() + 1`.
    pub fn last_seq(&self) -> Result<Seq, StoreError> {
        self.t()?.last_seq()
    }

    /// The highest seq that feed retention removed (0 when none was).
    pub fn pruned_through(&self) -> Result<Seq, StoreError> {
        self.t()?.pruned_through()
    }

    /// Removes up to `limit` of the oldest change records that were detected
    /// before `cutoff` and have `seq <= max_seq`, with the bodies only they
    /// held (see the module doc), and raises [`Store::pruned_through`] to
    /// the last one; in transactions of at most [`CHUNK_EVENTS`] records.
    /// Stops at the first record that is too young or too high; a record
    /// that cannot be read is an error (it is never removed unread).
    pub fn prune_changes(
        &self,
        cutoff: Timestamp,
        max_seq: Seq,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let t = self.t()?;
        let mut removed = 0;
        while removed < limit {
            let want = CHUNK_EVENTS.min(limit - removed);
            let batch = doomed(&t, cutoff, max_seq, want)?;
            let Some(&last) = batch.records.last() else {
                break;
            };
            let result: Result<(), TransactionError<()>> = (&t.changes, &t.bodies, &t.meta)
                .transaction(|(log, bodies, meta)| {
                    for seq in &batch.records {
                        log.remove(&keys::seq(*seq))?;
                    }
                    for id in &batch.bodies {
                        bodies.remove(&keys::body(*id))?;
                    }
                    meta.insert(PRUNED_KEY, &keys::seq(last))?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                });
            result.map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => StoreError::Backend("prune aborted".into()),
            })?;
            removed += batch.records.len();
            if batch.records.len() < want {
                break;
            }
        }
        Ok(removed)
    }

    /// Counts bodies against what refers to them: a store whose retention
    /// is right has none dangling and none unreferenced.
    #[doc(hidden)]
    pub fn check_bodies(&self) -> Result<BodyCheck, StoreError> {
        let t = self.t()?;
        let mut referenced = BTreeSet::new();
        for item in t.events.iter() {
            let (k, v) = item?;
            referenced.insert(Head::decode(&k, &v)?.body);
        }
        for item in t.changes.iter() {
            let (k, v) = item?;
            let r: ChangeRecord<BodyId> = decode("changes", &k, &v)?;
            referenced.extend(std::iter::once(r.event).chain(r.previous));
        }
        let mut stored = BTreeSet::new();
        for item in t.bodies.iter() {
            let (k, _) = item?;
            stored.insert(keys::decode_body(&k).unwrap_or_default());
        }
        Ok(BodyCheck {
            stored: stored.len(),
            referenced: referenced.len(),
            dangling: referenced.difference(&stored).count(),
            unreferenced: stored.difference(&referenced).count(),
        })
    }
}

/// What [`Store::check_bodies`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyCheck {
    pub stored: usize,
    pub referenced: usize,
    /// Referred to, but not stored.
    pub dangling: usize,
    /// Stored, but nothing refers to them.
    pub unreferenced: usize,
}

impl Trees {
    pub(super) fn pruned_through(&self) -> Result<Seq, StoreError> {
        Ok(self
            .meta
            .get(PRUNED_KEY)?
            .and_then(|v| keys::decode_seq(&v))
            .unwrap_or(Seq::ZERO))
    }
}

/// One retention transaction: the records to remove and the bodies freed.
struct Doomed {
    records: Vec<Seq>,
    bodies: Vec<BodyId>,
}

fn doomed(t: &Trees, cutoff: Timestamp, max_seq: Seq, n: usize) -> Result<Doomed, StoreError> {
    /// What retention reads of a record.
    #[derive(Deserialize)]
    struct Meta {
        seq: Seq,
        account: String,
        calendar_id: String,
        event_id: String,
        change: ChangeKind,
        event: BodyId,
        previous: Option<BodyId>,
        detected_at: Timestamp,
    }
    let mut out = Doomed {
        records: Vec::new(),
        bodies: Vec::new(),
    };
    let mut freed = HashSet::new();
    for item in t.changes.iter().take(n) {
        let (k, v) = item?;
        let r: Meta = decode("changes", &k, &v)?;
        if r.seq > max_seq || r.detected_at >= cutoff {
            break;
        }
        out.records.push(r.seq);
        out.bodies.extend(r.previous.filter(|b| freed.insert(*b)));
        if r.change == ChangeKind::Deleted {
            let key = keys::event(&CalendarKey::new(r.account, r.calendar_id), &r.event_id);
            let held = match t.events.get(&key)? {
                Some(h) => Head::decode(&key, &h)?.body == r.event,
                None => false,
            };
            if !held && freed.insert(r.event) {
                out.bodies.push(r.event);
            }
        }
    }
    Ok(out)
}

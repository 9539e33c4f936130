//! Schema 1 -> 2, in place, at open: event bodies move out of the heads
//! and the change records into the `bodies` tree. No change record is
//! written and no sync token is touched, so nothing is reported again and
//! no calendar is resynced because of it.
//!
//! It runs in batches of [`BATCH`], each one transaction that also records
//! how far it got, so a migration stopped at any moment resumes where it
//! stopped. Two phases:
//! 1. heads, in key order: each body gets a fresh id;
//! 2. records, newest first. A body that several things hold is stored
//!    once, as a schema-2 write would have stored it (see `log.rs`): the
//!    newest record of an event shares its `event` with the head when they
//!    are the same text, and an older record's `event` is shared with the
//!    next record's `previous`. The `migration_chain` tree remembers, per
//!    event, the `previous` of the record met last (so the next older one
//!    can share it); it is dropped at the end.
//!
//! A body that should be shared but differs is stored twice, which
//! retention may then never free; it is logged, not fatal.

use std::collections::HashMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::heads::Head;
use super::{
    decode, encode, keys, BodyId, CalendarKey, ChangeRecord, Seq, StoreError, Trees, SCHEMA_KEY,
    SCHEMA_VERSION,
};
use crate::rawjson::RawJson;

/// Heads or records per transaction.
const BATCH: usize = 250;
/// The last head key migrated.
const HEADS_AFTER: &[u8] = b"migration_heads_after";
/// Set once every head is migrated.
const HEADS_DONE: &[u8] = b"migration_heads_done";
/// Records below this seq are still to migrate.
const RECORDS_BELOW: &[u8] = b"migration_records_below";
const CHAIN: &str = "migration_chain";
/// How often progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Brings the store to [`SCHEMA_VERSION`], or does nothing when it is.
pub(super) fn run(t: &Trees) -> Result<(), StoreError> {
    let found = t
        .meta
        .get(SCHEMA_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map_or(SCHEMA_VERSION, u32::from_be_bytes);
    if found >= SCHEMA_VERSION {
        // A migration stopped between its last step and dropping the chain.
        if t.db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == CHAIN.as_bytes())
        {
            t.db.drop_tree(CHAIN)?;
        }
        return Ok(());
    }
    let started = Instant::now();
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        events = t.events.len(),
        records = t.changes.len(),
        "store migration: moving event bodies out of heads and records (resumable; no record is written and nothing is resynced)"
    );
    let (heads, shared) = (migrate_heads(t)?, migrate_records(t)?);
    let result: Result<(), TransactionError<()>> = t.meta.transaction(|meta| {
        meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        for k in [HEADS_AFTER, HEADS_DONE, RECORDS_BELOW] {
            meta.remove(k)?;
        }
        Ok::<(), ConflictableTransactionError<()>>(())
    });
    result.map_err(tx_error)?;
    t.db.drop_tree(CHAIN)?;
    t.db.flush()?;
    tracing::info!(
        heads,
        records = shared.records,
        bodies_shared = shared.shared,
        bodies_not_shared = shared.unshared,
        took = ?started.elapsed(),
        "store migration done"
    );
    Ok(())
}

/// A head as schema 1 stored it: the version with its body.
#[derive(Deserialize)]
struct HeadV1 {
    etag: Option<String>,
    sequence: Option<i64>,
    updated: Option<String>,
    status: Option<String>,
    generation: u64,
    #[serde(default)]
    last_change: Seq,
    body: RawJson,
}

/// Phase 1; returns the number of heads migrated by this run.
fn migrate_heads(t: &Trees) -> Result<usize, StoreError> {
    let mut done = 0;
    let mut logged = Instant::now();
    while !t.meta.contains_key(HEADS_DONE)? {
        let from = match t.meta.get(HEADS_AFTER)? {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut heads = Vec::new();
        let mut bodies = Vec::new();
        for item in t
            .events
            .range::<sled::IVec, _>((from, Bound::Unbounded))
            .take(BATCH)
        {
            let (k, v) = item?;
            let old: HeadV1 = decode("events", &k, &v)?;
            let id = t.next_body();
            bodies.push((keys::body(id), old.body));
            let head = Head {
                etag: old.etag,
                sequence: old.sequence,
                updated: old.updated,
                status: old.status,
                generation: old.generation,
                last_change: old.last_change,
                body: id,
            };
            heads.push((k, encode(&head)));
        }
        let last = heads.last().map(|(k, _)| k.clone());
        let result: Result<(), TransactionError<()>> =
            (&t.events, &t.bodies, &t.meta).transaction(|(events, b, meta)| {
                for (k, json) in &bodies {
                    b.insert(&k[..], json.get().as_bytes())?;
                }
                for (k, v) in &heads {
                    events.insert(k, v.as_slice())?;
                }
                match &last {
                    Some(k) => meta.insert(HEADS_AFTER, k)?,
                    None => meta.insert(HEADS_DONE, &[1u8])?,
                };
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(tx_error)?;
        done += heads.len();
        if logged.elapsed() >= LOG_EVERY {
            logged = Instant::now();
            tracing::info!(phase = "heads", migrated = done, "store migration progress");
        }
        t.failpoint("abort_after_migration_batch");
    }
    Ok(done)
}

/// What phase 2 did.
#[derive(Default)]
struct Shared {
    records: usize,
    shared: usize,
    unshared: usize,
}

/// One batch of phase 2: what it writes, and what it has decided so far
/// (read before the trees, which it has not written yet).
#[derive(Default)]
struct Batch {
    records: Vec<([u8; 8], Vec<u8>)>,
    bodies: HashMap<BodyId, RawJson>,
    heads: HashMap<Vec<u8>, Head>,
    /// Event key -> the `previous` of its record met last (None: it had none).
    chain: HashMap<Vec<u8>, Option<BodyId>>,
}

impl Batch {
    fn body_is(&self, t: &Trees, id: BodyId, json: &RawJson) -> Result<bool, StoreError> {
        Ok(match self.bodies.get(&id) {
            Some(b) => b.get() == json.get(),
            None => t
                .bodies
                .get(keys::body(id))?
                .is_some_and(|b| b.as_ref() == json.get().as_bytes()),
        })
    }

    /// The link of `key`, from this batch or from the `links` tree.
    fn chain(&self, links: &sled::Tree, key: &[u8]) -> Result<Option<Option<BodyId>>, StoreError> {
        if let Some(link) = self.chain.get(key) {
            return Ok(Some(*link));
        }
        Ok(links.get(key)?.map(|v| keys::decode_body(&v)))
    }

    fn head(&self, t: &Trees, key: &[u8]) -> Result<Option<Head>, StoreError> {
        if let Some(h) = self.heads.get(key) {
            return Ok(Some(h.clone()));
        }
        t.events
            .get(key)?
            .map(|v| Head::decode(key, &v))
            .transpose()
    }

    fn fresh(&mut self, t: &Trees, json: RawJson) -> BodyId {
        let id = t.next_body();
        self.bodies.insert(id, json);
        id
    }

    /// The id for the `event` of record `r`: shared with what holds the
    /// same body after it, or fresh.
    fn event_body(
        &mut self,
        (t, links): (&Trees, &sled::Tree),
        r: &ChangeRecord,
        key: &[u8],
        stats: &mut Shared,
    ) -> Result<BodyId, StoreError> {
        let candidate = match self.chain(links, key)? {
            Some(Some(next_previous)) => Some(next_previous),
            // The next record had no `previous`: nothing holds this body.
            Some(None) => None,
            // The event's newest record: the head may hold its body.
            None => match self.head(t, key)? {
                Some(mut head) if self.body_is(t, head.body, &r.event)? => {
                    head.last_change = head.last_change.max(r.seq);
                    let id = head.body;
                    self.heads.insert(key.to_vec(), head);
                    stats.shared += 1;
                    return Ok(id);
                }
                _ => None,
            },
        };
        if let Some(id) = candidate {
            if self.body_is(t, id, &r.event)? {
                stats.shared += 1;
                return Ok(id);
            }
            stats.unshared += 1;
            tracing::warn!(seq = r.seq.get(), "store migration: a record's body differs from the next record's previous; stored twice");
        }
        Ok(self.fresh(t, r.event.clone()))
    }
}

/// Phase 2.
fn migrate_records(t: &Trees) -> Result<Shared, StoreError> {
    let chain = t.db.open_tree(CHAIN)?;
    let mut stats = Shared::default();
    let mut logged = Instant::now();
    loop {
        let below = match t.meta.get(RECORDS_BELOW)? {
            Some(v) => keys::decode_seq(&v).unwrap_or(Seq::ZERO),
            None => t.last_seq()?.next(),
        };
        let mut batch = Batch::default();
        let mut lowest = None;
        for item in t.changes.range(..keys::seq(below)).rev().take(BATCH) {
            let (k, v) = item?;
            let r: ChangeRecord = decode("changes", &k, &v)?;
            let key = keys::event(&CalendarKey::new(&r.account, &r.calendar_id), &r.event_id);
            let event = batch.event_body((t, &chain), &r, &key, &mut stats)?;
            let previous = r.previous.clone().map(|p| batch.fresh(t, p));
            batch.chain.insert(key, previous);
            lowest = Some(r.seq);
            let stored = r.map_bodies(|_| Ok::<_, std::convert::Infallible>(event));
            let Ok(mut stored) = stored;
            stored.previous = previous;
            batch.records.push((keys::seq(stored.seq), encode(&stored)));
        }
        let Some(lowest) = lowest else {
            return Ok(stats);
        };
        let trees = (&t.changes, &t.bodies, &t.events, &chain, &t.meta);
        let result: Result<(), TransactionError<()>> =
            trees.transaction(|(log, bodies, events, links, meta)| {
                for (id, json) in &batch.bodies {
                    bodies.insert(&keys::body(*id)[..], json.get().as_bytes())?;
                }
                for (k, v) in &batch.records {
                    log.insert(&k[..], v.as_slice())?;
                }
                for (k, head) in &batch.heads {
                    events.insert(k.as_slice(), encode(head))?;
                }
                for (k, link) in &batch.chain {
                    let v = link.map(keys::body).map_or(Vec::new(), |b| b.to_vec());
                    links.insert(k.as_slice(), v)?;
                }
                meta.insert(RECORDS_BELOW, &keys::seq(lowest))?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(tx_error)?;
        stats.records += batch.records.len();
        if logged.elapsed() >= LOG_EVERY {
            logged = Instant::now();
            tracing::info!(
                phase = "records",
                migrated = stats.records,
                below_seq = lowest.get(),
                "store migration progress"
            );
        }
        t.failpoint("abort_after_migration_batch");
    }
}

fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::from(e),
        TransactionError::Abort(()) => StoreError::Backend("migration aborted".into()),
    }
}

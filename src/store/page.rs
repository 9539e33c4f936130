//! Writing one page of a sync: [`Store::apply_page`].
//!
//! A page is written as a few sled transactions of at most
//! [`CHUNK_EVENTS`] events each, not as one: a transaction's cost grows
//! with its size, and its writes are held in memory until it commits. All
//! writes of one event (its head or its removal, its new body, its change
//! records, and the freeing of a body it let go of) go in the same
//! transaction, and the calendar's state from the page (the
//! new sync token, on the last page) only in the last one.
//!
//! Why this is exactly as crash-safe as one transaction per page: a crash
//! between two transactions leaves the calendar at its old sync token (or
//! page), so the page is fetched again. Its events already written now
//! match the store by etag, so the planner makes no record for them;
//! those not written are planned as before. Each change is therefore
//! recorded once, and none is lost. The chunks go in seq order, so the
//! records that survive a crash are a prefix of the page's seqs (no gap),
//! and their seqs were never shown to a reader (the head moves after the
//! whole page is flushed).
//!
//! The store keeps each calendar's count of live events (`events` of its
//! state) in the same transactions, from the versions it replaces, so the
//! count stays right across a crash between them.

use std::collections::{HashMap, HashSet};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::heads::Head;
use super::{
    decode, encode, keys, Body, BodyId, CalendarState, EventStatus, PageWrite, Seq, Store,
    StoreError, Trees,
};
use crate::rawjson::RawJson;

/// Events per transaction of a page.
pub const CHUNK_EVENTS: usize = 250;

/// The writes of up to [`CHUNK_EVENTS`] events, encoded.
#[derive(Default)]
struct Chunk {
    /// New bodies, in id order.
    bodies: Vec<([u8; 8], RawJson)>,
    /// Key, head, and whether it is a live event.
    upserts: Vec<(Vec<u8>, Head, bool)>,
    deletes: Vec<Vec<u8>>,
    changes: Vec<([u8; 8], Vec<u8>)>,
    /// Bodies the chunk's records name as `previous`: retention frees them.
    shown: HashSet<BodyId>,
}

impl Chunk {
    /// The id of `body`, writing a new one under a fresh id.
    fn body(&mut self, t: &Trees, body: Body) -> BodyId {
        match body {
            Body::Stored(id) => id,
            Body::New(json) => {
                let id = t.next_body();
                self.bodies.push((keys::body(id), json));
                id
            }
        }
    }
}

impl Store {
    /// Writes one page: event heads and bodies, deletions, change records
    /// and the calendar state (with the sync token when it is the last
    /// page), in transactions of at most [`CHUNK_EVENTS`] events (see the
    /// module doc). The state's `events` count is the store's own,
    /// whatever the page says.
    pub fn apply_page(&self, page: PageWrite) -> Result<(), StoreError> {
        let t = self.t()?;
        let cal_key = keys::calendar(&page.calendar);
        let state = page.state.clone();
        let pruned = t.pruned_through()?;
        let chunks = chunks(&t, page);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.iter().enumerate() {
            write_chunk(&t, &cal_key, chunk, pruned, (i == last).then_some(&state))?;
            t.failpoint("abort_after_chunk");
        }
        Ok(())
    }
}

/// Splits a page into chunks by event, in the order of the page's change
/// records (so in seq order), then the events without a record. Always at
/// least one chunk, which may be empty (a state alone). A new body that a
/// record and its event's version both carry is stored once.
fn chunks(t: &Trees, mut page: PageWrite) -> Vec<Chunk> {
    let mut upserts = std::mem::take(&mut page.upserts);
    // Each version names its event's latest record of the page (a version
    // the page restamps without a record keeps the one it had).
    let latest: HashMap<&str, Seq> = page
        .changes
        .iter()
        .map(|c| (c.event_id.as_str(), c.seq))
        .collect();
    for e in &mut upserts {
        if let Some(&seq) = latest.get(e.id.as_str()) {
            e.last_change = e.last_change.max(seq);
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let ids = page
        .changes
        .iter()
        .map(|c| &c.event_id)
        .chain(upserts.iter().map(|e| &e.id))
        .chain(page.deletes.iter());
    for id in ids {
        if !index.contains_key(id) {
            index.insert(id.clone(), order.len());
            order.push(id.clone());
        }
    }
    let of = |id: &str| index.get(id).map_or(0, |i| i / CHUNK_EVENTS);
    let mut chunks: Vec<Chunk> = (0..order.len().div_ceil(CHUNK_EVENTS).max(1))
        .map(|_| Chunk::default())
        .collect();
    // The new body each event's record carries, by event id.
    let mut recorded: HashMap<String, (RawJson, BodyId)> = HashMap::new();
    for mut c in std::mem::take(&mut page.changes) {
        let chunk = &mut chunks[of(&c.event_id)];
        // An event listed twice in a page: its second record's `previous`
        // is the first one's `event`.
        if let (Some(Body::New(json)), Some((same, id))) = (&c.previous, recorded.get(&c.event_id))
        {
            if json == same {
                c.previous = Some(Body::Stored(*id));
            }
        }
        let new = match &c.event {
            Body::New(json) => Some(json.clone()),
            Body::Stored(_) => None,
        };
        let event_id = c.event_id.clone();
        let stored = c.map_bodies(|b| Ok::<_, std::convert::Infallible>(chunk.body(t, b)));
        let Ok(stored) = stored;
        chunk.shown.extend(stored.previous);
        if let Some(json) = new {
            recorded.insert(event_id, (json, stored.event));
        }
        chunk.changes.push((keys::seq(stored.seq), encode(&stored)));
    }
    // Only an event's last version of the page is kept.
    let mut last_of: HashMap<String, usize> = HashMap::new();
    for (i, e) in upserts.iter().enumerate() {
        last_of.insert(e.id.clone(), i);
    }
    let upserts = upserts
        .into_iter()
        .enumerate()
        .filter(|(i, e)| last_of.get(&e.id) == Some(i))
        .map(|(_, e)| e);
    for e in upserts {
        let chunk = &mut chunks[of(&e.id)];
        let live = EventStatus::of(e.status.as_deref()) == EventStatus::Live;
        let body = match (&e.body, recorded.get(&e.id)) {
            (Body::New(json), Some((same, id))) if json == same => *id,
            _ => chunk.body(t, e.body.clone()),
        };
        let head = Head::of(&e, body);
        chunk
            .upserts
            .push((keys::event(&page.calendar, &e.id), head, live));
    }
    for id in &page.deletes {
        chunks[of(id)].deletes.push(keys::event(&page.calendar, id));
    }
    chunks
}

/// One transaction: the chunk's writes, and the calendar's state with its
/// event count moved by what the chunk did (`state` replaces the rest of
/// it on the last chunk; before that the stored state is kept).
///
/// A head that lets go of its body without a record of the chunk naming
/// it as `previous` (a hidden occurrence coming back, or swept) frees it
/// here when the record that introduced it is already removed (at or
/// below `pruned`); otherwise retention frees it with that record.
fn write_chunk(
    t: &Trees,
    cal_key: &[u8],
    chunk: &Chunk,
    pruned: Seq,
    state: Option<&CalendarState>,
) -> Result<(), StoreError> {
    // What replacing the head `old` with one holding `body` does: whether
    // the old one was live, and the body to free.
    let replaced = |key: &[u8], old: Option<sled::IVec>, body: Option<BodyId>| {
        let Some(old) = old else {
            return Ok((0i64, None));
        };
        let old = Head::decode(key, &old)?;
        let live = i64::from(EventStatus::of(old.status.as_deref()) == EventStatus::Live);
        let orphan =
            body != Some(old.body) && !chunk.shown.contains(&old.body) && old.last_change <= pruned;
        Ok::<_, StoreError>((live, orphan.then_some(old.body)))
    };
    let abort = ConflictableTransactionError::Abort;
    let trees = (&t.events, &t.bodies, &t.changes, &t.calendars);
    let result: Result<(), TransactionError<StoreError>> =
        trees.transaction(|(events, bodies, log, cals)| {
            for (k, json) in &chunk.bodies {
                bodies.insert(&k[..], json.get().as_bytes())?;
            }
            let mut delta = 0i64;
            for (k, head, live) in &chunk.upserts {
                let old = events.insert(k.as_slice(), encode(head))?;
                let (was, orphan) = replaced(k, old, Some(head.body)).map_err(abort)?;
                delta += i64::from(*live) - was;
                if let Some(b) = orphan {
                    bodies.remove(&keys::body(b))?;
                }
            }
            for k in &chunk.deletes {
                let (was, orphan) =
                    replaced(k, events.remove(k.as_slice())?, None).map_err(abort)?;
                delta -= was;
                if let Some(b) = orphan {
                    bodies.remove(&keys::body(b))?;
                }
            }
            for (k, v) in &chunk.changes {
                // A seq is written once: overwriting one would lose a change.
                if log.insert(&k[..], v.as_slice())?.is_some() {
                    let seq = Seq::new(u64::from_be_bytes(*k));
                    return Err(abort(StoreError::SeqTaken(seq)));
                }
            }
            let stored: CalendarState = match cals.get(cal_key)? {
                Some(v) => decode("calendars", cal_key, &v).map_err(abort)?,
                None => CalendarState::default(),
            };
            let mut next = state.cloned().unwrap_or_else(|| stored.clone());
            next.events = stored.events.saturating_add_signed(delta);
            cals.insert(cal_key, encode(&next))?;
            Ok(())
        });
    result.map_err(|e| match e {
        TransactionError::Storage(e) => StoreError::from(e),
        TransactionError::Abort(e) => e,
    })
}

//! Writing one page of a sync: [`Store::apply_page`].
//!
//! A page is written as a few sled transactions of at most
//! [`CHUNK_EVENTS`] events each, not as one: a transaction's cost grows
//! with its size, and its writes are held in memory until it commits. All
//! writes of one event (its version or removal and its change records) go
//! in the same transaction, and the calendar's state from the page (the
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{
    decode, encode, keys, CalendarState, EventStatus, PageWrite, Seq, Store, StoreError, Trees,
};

/// Events per transaction of a page.
pub const CHUNK_EVENTS: usize = 250;

/// The writes of up to [`CHUNK_EVENTS`] events, encoded.
#[derive(Default)]
struct Chunk {
    /// Key, value, and whether the version is a live event.
    upserts: Vec<(Vec<u8>, Vec<u8>, bool)>,
    deletes: Vec<Vec<u8>>,
    changes: Vec<([u8; 8], Vec<u8>)>,
}

impl Store {
    /// Writes one page: event versions, deletions, change records and the
    /// calendar state (with the sync token when it is the last page), in
    /// transactions of at most [`CHUNK_EVENTS`] events (see the module doc).
    /// The state's `events` count is the store's own, whatever the page says.
    pub fn apply_page(&self, page: PageWrite) -> Result<(), StoreError> {
        let t = self.t()?;
        let cal_key = keys::calendar(&page.calendar);
        let state = page.state.clone();
        let chunks = chunks(page);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.iter().enumerate() {
            write_chunk(&t, &cal_key, chunk, (i == last).then_some(&state))?;
            failpoint(&t);
        }
        Ok(())
    }
}

/// Splits a page into chunks by event, in the order of the page's change
/// records (so in seq order), then the events without a record. Always at
/// least one chunk, which may be empty (a state alone).
fn chunks(mut page: PageWrite) -> Vec<Chunk> {
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
    let mut order: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let ids = page
        .changes
        .iter()
        .map(|c| c.event_id.as_str())
        .chain(upserts.iter().map(|e| e.id.as_str()))
        .chain(page.deletes.iter().map(String::as_str));
    for id in ids {
        index.entry(id).or_insert_with(|| {
            order.push(id);
            order.len() - 1
        });
    }
    let of = |id: &str| index.get(id).map_or(0, |i| i / CHUNK_EVENTS);
    let mut chunks: Vec<Chunk> = (0..order.len().div_ceil(CHUNK_EVENTS).max(1))
        .map(|_| Chunk::default())
        .collect();
    for e in &upserts {
        let live = EventStatus::of(e.status.as_deref()) == EventStatus::Live;
        chunks[of(&e.id)]
            .upserts
            .push((keys::event(&page.calendar, &e.id), encode(e), live));
    }
    for id in &page.deletes {
        chunks[of(id)].deletes.push(keys::event(&page.calendar, id));
    }
    for c in &page.changes {
        chunks[of(&c.event_id)]
            .changes
            .push((keys::seq(c.seq), encode(c)));
    }
    chunks
}

/// One transaction: the chunk's writes, and the calendar's state with its
/// event count moved by what the chunk did (`state` replaces the rest of
/// it on the last chunk; before that the stored state is kept).
fn write_chunk(
    t: &Trees,
    cal_key: &[u8],
    chunk: &Chunk,
    state: Option<&CalendarState>,
) -> Result<(), StoreError> {
    let was_live = |key: &[u8], old: Option<sled::IVec>| -> Result<i64, StoreError> {
        #[derive(serde::Deserialize)]
        struct Status {
            status: Option<String>,
        }
        Ok(match old {
            None => 0,
            Some(v) => {
                let s: Status = decode("events", key, &v)?;
                i64::from(EventStatus::of(s.status.as_deref()) == EventStatus::Live)
            }
        })
    };
    let abort = ConflictableTransactionError::Abort;
    let result: Result<(), TransactionError<StoreError>> = (&t.events, &t.changes, &t.calendars)
        .transaction(|(events, log, cals)| {
            let mut delta = 0i64;
            for (k, v, live) in &chunk.upserts {
                let old = events.insert(k.as_slice(), v.as_slice())?;
                delta += i64::from(*live) - was_live(k, old).map_err(abort)?;
            }
            for k in &chunk.deletes {
                delta -= was_live(k, events.remove(k.as_slice())?).map_err(abort)?;
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

/// A test hook: with `GCAL_SYNCD_FAILPOINT=abort_after_chunk:N` in the
/// environment, the process flushes and aborts (as a SIGKILL would stop
/// it, no destructor runs) right after the N-th page transaction it
/// commits, so a test can stop the writer between any two transactions.
fn failpoint(t: &Trees) {
    static AFTER: OnceLock<Option<usize>> = OnceLock::new();
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let after = AFTER.get_or_init(|| {
        std::env::var("GCAL_SYNCD_FAILPOINT")
            .ok()?
            .strip_prefix("abort_after_chunk:")?
            .parse()
            .ok()
    });
    if let Some(after) = after {
        if DONE.fetch_add(1, Ordering::SeqCst) + 1 == *after {
            let _ = t.db.flush();
            eprintln!("failpoint: aborting after page transaction {after}");
            std::process::abort();
        }
    }
}

//! The durable state of the daemon, in sled. This module is the only one that
//! imports sled; everything else sees [`Store`] and the plain records of
//! [`records`].
//!
//! Trees: `meta` (schema version, seq floor, highest pruned seq),
//! `calendars` (calendar key -> state and sync token), `events` (calendar
//! key + event id -> a small head: version fields and a body id,
//! `heads.rs`), `bodies` (big-endian body id -> the Event JSON as Google
//! sent it, written once, in key order), `changes` (big-endian seq ->
//! change record, its bodies named by id; `log.rs` reads them back and
//! frees bodies with retention), `channels` (channel id -> channel),
//! `cursors` (sink name -> seq) and `sink_state` (sink name -> whether,
//! why and since when the sink is disabled). `migrate.rs` brings a schema-1 store,
//! whose heads and records held the bodies themselves, to this layout.
//!
//! Beside sled's files, `head.json` (`marker.rs`) holds the store id and
//! the highest durable seq, so that a store that lost data is detected at
//! open instead of handing out the same seqs again.
//!
//! Invariant: a sync token is written in the last transaction of the page
//! that produced it, after every event version and change record of that
//! page ([`Store::apply_page`]; why a page may take several transactions
//! and stay as safe as one is in `page.rs`), and [`Store::flush`] makes it
//! durable before it is relied on.

mod heads;
mod keys;
mod log;
mod marker;
mod migrate;
mod page;
pub mod records;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use log::{BodyCheck, MAX_SCAN};
pub use page::CHUNK_EVENTS;
pub use records::*;

/// The store layout this build writes. Bump it with a migration when the
/// encoding of any tree changes.
pub const SCHEMA_VERSION: u32 = 2;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// Set when a corrupt store was replaced: the feed's seqs continue above it.
const SEQ_FLOOR_KEY: &[u8] = b"seq_floor";
/// The highest seq removed by feed retention: readers behind it missed records.
const PRUNED_KEY: &[u8] = b"pruned_through";
/// A UUID given to the store when it is created (see `marker.rs`).
const STORE_ID_KEY: &[u8] = b"store_id";
/// sled keeps up to this much in its page cache (and, measured, uses
/// about as much again for its nodes). 16 MB rather than 32: with 10,000
/// idle calendars the daemon's RSS went 110 -> 92 MB, and the peak of
/// a first sync of 100k events 119-124 -> 96 MB, for 3-27% of that sync's
/// speed (BENCHMARKS.md, "Many calendars").
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// How often sled's own thread writes and fsyncs (500 ms by default, even
/// when there is nothing to write). Every write the invariants depend on is
/// flushed explicitly (a page before its token is published, a sink's
/// cursor, a channel before its watch), so this only bounds how long a
/// best-effort write (a channel confirmed, a cursor of a filtered-out
/// range) may wait; the thread also cleans sled's segments, so it stays.
const FLUSH_EVERY_MS: u64 = 5_000;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another process (is gcal-syncd already running?)")]
    Locked { path: PathBuf },
    #[error("the store at {path} has schema version {found}, newer than {supported} which this gcal-syncd supports; run a newer gcal-syncd or move the store aside")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot create the store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store record {tree}/{key} cannot be decoded: {reason}")]
    Decode {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("change record seq {0} is already stored; the page was not written")]
    SeqTaken(Seq),
    /// sled's own error, kept as the `source()`.
    #[error("store backend error: {0}")]
    Sled(#[from] sled::Error),
    /// Everything else that went wrong below the store's API.
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("the store is being reopened after a write failure")]
    Reopening,
    #[error("the store cannot be written: {0}")]
    Failing(String),
}

/// A handle to the open store. Cheap to clone; all clones share one
/// database, which [`Store::reopen`] can replace under all of them.
#[derive(Clone)]
pub struct Store {
    /// The open database; `None` only while [`Store::reopen`] runs (or
    /// after it failed), when every operation answers
    /// [`StoreError::Reopening`].
    trees: Arc<RwLock<Option<Arc<Trees>>>>,
    /// Stays the same across reopens; a replaced store gets a new one.
    id: String,
    path: PathBuf,
    recovered_from: Option<PathBuf>,
}

/// The sled database and its trees.
struct Trees {
    db: sled::Db,
    /// Schema version, seq floor, highest pruned seq.
    meta: sled::Tree,
    calendars: sled::Tree,
    /// Event heads (`heads.rs`).
    events: sled::Tree,
    /// Body id -> the Event JSON as Google sent it (`log.rs`).
    bodies: sled::Tree,
    channels: sled::Tree,
    changes: sled::Tree,
    cursors: sled::Tree,
    /// Sink name -> [`SinkState`] as JSON.
    sink_state: sled::Tree,
    /// The next body id: one above the highest stored.
    next_body: AtomicU64,
    /// Calendar key -> 1 when Google refused push for it (poll-only). Kept
    /// apart from `calendars`, which the sync engine rewrites every page.
    poll_only: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `path`.
    ///
    /// A store that sled cannot read (see `is_corrupt`), or whose data is
    /// missing or behind its durable-head marker (see `marker.rs`), is moved
    /// aside to `<path>.corrupt-<UTC timestamp>` (never deleted) and an
    /// empty one is started under a new store id, its seqs above anything
    /// the old one held: the next sync of every calendar is then a full one.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_store_dir(path)?;
        let damage = match open_db(path) {
            Ok(db) => {
                let trees = Trees::from_db(db, path, None)?;
                match verify(&trees, path)? {
                    Ok(id) => {
                        migrate::run(&trees)?;
                        return Ok(Store::new(trees, id, path, None));
                    }
                    Err(damage) => damage,
                }
            }
            Err(e) if is_corrupt(&e) => Damage {
                reason: e.to_string(),
                // An unreadable marker names no head: the floor is the clock.
                marked_head: marker::read(path)
                    .ok()
                    .flatten()
                    .map_or(Seq::ZERO, |m| m.durable_head),
            },
            Err(e) => return Err(classify_open(e, path)),
        };
        let marked_head = damage.marked_head;
        let aside = aside_name(path);
        tracing::error!(
            store = %path.display(), moved_to = %aside.display(), reason = %damage.reason,
            durable_head = marked_head.get(),
            "STORE CORRUPT: moved it aside and starting empty under a new store id; every calendar will be fully resynced"
        );
        std::fs::rename(path, &aside).map_err(|e| {
            StoreError::Backend(format!(
                "the store at {} is corrupt and cannot be moved aside to {}: {e}",
                path.display(),
                aside.display()
            ))
        })?;
        create_store_dir(path)?;
        let db = open_db(path).map_err(|e| classify_open(e, path))?;
        // The old feed's head is known at best up to the marker's last
        // batch: continue above any seq it can have held, so that
        // consumers' cursors stay behind the new records, not ahead of them.
        let floor = Seq::new(chrono::Utc::now().timestamp_millis().max(0) as u64).max(marked_head);
        let trees = Trees::from_db(db, path, Some(floor))?;
        let id = start_marker(&trees, path)?;
        Ok(Store::new(trees, id, path, Some(aside)))
    }

    fn new(trees: Trees, id: String, path: &Path, recovered_from: Option<PathBuf>) -> Store {
        Store {
            trees: Arc::new(RwLock::new(Some(Arc::new(trees)))),
            id,
            path: path.to_path_buf(),
            recovered_from,
        }
    }

    /// The open database, or [`StoreError::Reopening`].
    fn t(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// Closes the database and opens it again, in place for every clone.
    ///
    /// sled keeps the first I/O error (a full disk, say) and fails every
    /// later write and flush with it until the database is opened anew;
    /// this is how the feed writer recovers without a restart. Writes that
    /// were not flushed are lost, which is safe: nothing unflushed was ever
    /// shown to a reader, and the sync tokens went with them. A database
    /// that comes back behind its marker, or as another store, is refused.
    pub fn reopen(&self) -> Result<(), StoreError> {
        // Take the database out first, so that its lock is released once
        // the operations in flight drop their handles (open_db waits).
        let old = self.trees.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
        let db = open_db(&self.path).map_err(|e| classify_open(e, &self.path))?;
        let trees = Trees::from_db(db, &self.path, None)?;
        match verify(&trees, &self.path)? {
            Ok(id) if id == self.id => {}
            Ok(other) => {
                return Err(StoreError::Backend(format!(
                    "after reopening, {} holds store {other}, not {}",
                    self.path.display(),
                    self.id
                )))
            }
            Err(damage) => {
                return Err(StoreError::Backend(format!(
                    "after reopening, the store is damaged: {}",
                    damage.reason
                )))
            }
        }
        *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(trees));
        Ok(())
    }

    /// Records `head` as durable in the marker. Call only once the records
    /// up to `head` were flushed.
    pub fn mark_durable(&self, head: Seq) -> Result<(), StoreError> {
        write_marker(&self.path, &self.id, head)
    }

    /// The store's id: it changes only when a damaged store is replaced.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Why an opened store cannot be trusted.
struct Damage {
    reason: String,
    /// The marker's durable head, when it has one.
    marked_head: Seq,
}

fn create_store_dir(path: &Path) -> Result<(), StoreError> {
    crate::private_dir::create_dir(path).map_err(|source| StoreError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Compares an opened database with the durable-head marker beside it:
/// `Ok(Ok(store id))` when they agree (or there is no marker yet, which is
/// then written), `Ok(Err(damage))` when the data is missing, another
/// store's, or behind the marker.
fn verify(trees: &Trees, path: &Path) -> Result<Result<String, Damage>, StoreError> {
    let marker = match marker::read(path) {
        Ok(m) => m,
        Err(reason) => {
            return Ok(Err(Damage {
                reason,
                marked_head: Seq::ZERO,
            }))
        }
    };
    let id = trees
        .meta
        .get(STORE_ID_KEY)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let Some(marker) = marker else {
        // A new store, or one made before the marker existed.
        return start_marker(trees, path).map(Ok);
    };
    let head = trees.last_seq()?;
    let damage = |reason: String| {
        Ok(Err(Damage {
            reason,
            marked_head: marker.durable_head,
        }))
    };
    match id {
        None => damage(format!(
            "its data is missing (no store id), but seqs up to {} were made durable",
            marker.durable_head
        )),
        Some(id) if id != marker.store_id => damage(format!(
            "its data belongs to store {id}, not to store {} named by the marker",
            marker.store_id
        )),
        Some(_) if head < marker.durable_head => damage(format!(
            "its feed ends at seq {head}, behind seq {} that was made durable: it went back in time",
            marker.durable_head
        )),
        Some(id) => Ok(Ok(id)),
    }
}

/// Gives a database without a marker its id (keeping one it has) and
/// writes the marker at its current head.
fn start_marker(trees: &Trees, path: &Path) -> Result<String, StoreError> {
    let id = match trees.meta.get(STORE_ID_KEY)? {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            trees.meta.insert(STORE_ID_KEY, id.as_bytes())?;
            id
        }
    };
    trees.db.flush()?;
    write_marker(path, &id, trees.last_seq()?)?;
    Ok(id)
}

fn write_marker(path: &Path, store_id: &str, head: Seq) -> Result<(), StoreError> {
    let m = marker::Marker {
        store_id: store_id.to_string(),
        durable_head: head,
    };
    marker::write(path, &m).map_err(|e| {
        StoreError::Backend(format!(
            "cannot write the durable-head marker in {}: {e}",
            path.display()
        ))
    })
}

/// One above the highest body id stored (1 for none).
fn next_body(bodies: &sled::Tree) -> Result<u64, StoreError> {
    let last = bodies.last()?.and_then(|(k, _)| keys::decode_body(&k));
    Ok(last.map_or(1, |b| b.get().saturating_add(1)))
}

impl Trees {
    /// A fresh body id. Ids taken by a write that never reached the disk
    /// are taken again after a restart, which is safe: nothing refers to
    /// them.
    fn next_body(&self) -> BodyId {
        BodyId::new(self.next_body.fetch_add(1, Ordering::Relaxed))
    }

    /// A test hook: with `GCAL_SYNCD_FAILPOINT=<name>:N` in the
    /// environment, the process flushes and aborts (as a SIGKILL would stop
    /// it, no destructor runs) the N-th time it passes the fail point
    /// `name`: `abort_after_chunk` after each page transaction,
    /// `abort_after_migration_batch` after each batch of the migration,
    /// `abort_after_sink_ack` after a sink's batch was acknowledged and
    /// before its cursor moves, `abort_after_purge_page` after each page of
    /// a removed calendar's final records.
    fn failpoint(&self, name: &str) {
        static AT: OnceLock<Option<(String, usize)>> = OnceLock::new();
        static PASSED: AtomicUsize = AtomicUsize::new(0);
        let at = AT.get_or_init(|| {
            let v = std::env::var("GCAL_SYNCD_FAILPOINT").ok()?;
            let (name, n) = v.split_once(':')?;
            Some((name.to_string(), n.parse().ok()?))
        });
        if let Some((at, n)) = at {
            if at == name && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
                let _ = self.db.flush();
                eprintln!("failpoint: aborting at {name} {n}");
                std::process::abort();
            }
        }
    }

    /// See [`Store::last_seq`].
    fn last_seq(&self) -> Result<Seq, StoreError> {
        let be = |v: Option<sled::IVec>| v.and_then(|v| keys::decode_seq(&v)).unwrap_or(Seq::ZERO);
        let stored = be(self.changes.last()?.map(|(k, _)| k));
        let floor = be(self.meta.get(SEQ_FLOOR_KEY)?);
        // Retention may have removed every record: never hand a seq out twice.
        let pruned = be(self.meta.get(PRUNED_KEY)?);
        Ok(stored.max(floor).max(pruned))
    }

    /// The trees of `db`; `floor` is the seq floor of a replaced store.
    fn from_db(db: sled::Db, path: &Path, floor: Option<Seq>) -> Result<Trees, StoreError> {
        // Channel tokens are in here: owner only (the directory is 0700
        // already; files sled made before this version are tightened too).
        crate::private_dir::restrict_tree(path);
        let meta = db.open_tree("meta")?;
        if let Some(floor) = floor {
            meta.insert(SEQ_FLOOR_KEY, &keys::seq(floor))?;
        }
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).map_err(|_| {
                    StoreError::Decode {
                        tree: "meta",
                        key: "schema_version".into(),
                        reason: format!("{} bytes, expected 4", v.len()),
                    }
                })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: path.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        let bodies = db.open_tree("bodies")?;
        Ok(Trees {
            meta,
            calendars: db.open_tree("calendars")?,
            events: db.open_tree("events")?,
            next_body: AtomicU64::new(next_body(&bodies)?),
            bodies,
            channels: db.open_tree("channels")?,
            changes: db.open_tree("changes")?,
            cursors: db.open_tree("cursors")?,
            sink_state: db.open_tree("sink_state")?,
            poll_only: db.open_tree("poll_only")?,
            db,
        })
    }
}

impl Store {
    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a corrupt store was moved at open, if it was.
    pub fn recovered_from(&self) -> Option<&Path> {
        self.recovered_from.as_deref()
    }

    /// Writes the schema version (tests use it to fake a newer store).
    #[doc(hidden)]
    pub fn set_schema_version_for_tests(&self, version: u32) -> Result<(), StoreError> {
        let t = self.t()?;
        t.meta.insert(SCHEMA_KEY, &version.to_be_bytes())?;
        Ok(())
    }

    // ----- calendars -----

    /// The state of a calendar; the default for one never seen.
    pub fn calendar(&self, key: &CalendarKey) -> Result<CalendarState, StoreError> {
        let t = self.t()?;
        let k = keys::calendar(key);
        Ok(t.calendars
            .get(&k)?
            .map(|v| decode("calendars", &k, &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Every calendar with stored state, in key order.
    pub fn calendars(&self) -> Result<Vec<(CalendarKey, CalendarState)>, StoreError> {
        let t = self.t()?;
        let mut out = Vec::new();
        for item in t.calendars.iter() {
            let (k, v) = item?;
            let key = keys::decode_calendar(&k).ok_or_else(|| StoreError::Decode {
                tree: "calendars",
                key: format!("{k:?}"),
                reason: "malformed key".into(),
            })?;
            out.push((key, decode("calendars", &k, &v)?));
        }
        Ok(out)
    }

    // ----- channels -----

    pub fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let t = self.t()?;
        t.channels.insert(channel.id.as_bytes(), encode(channel))?;
        Ok(())
    }

    pub fn remove_channel(&self, id: &str) -> Result<(), StoreError> {
        let t = self.t()?;
        t.channels.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let t = self.t()?;
        t.channels
            .get(id.as_bytes())?
            .map(|v| decode("channels", id.as_bytes(), &v))
            .transpose()
    }

    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let t = self.t()?;
        t.channels
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode("channels", &k, &v)
            })
            .collect()
    }

    /// Marks a calendar as one Google will not push for (or clears it).
    pub fn set_poll_only(&self, key: &CalendarKey, poll_only: bool) -> Result<(), StoreError> {
        let t = self.t()?;
        if poll_only {
            t.poll_only.insert(keys::calendar(key), &[1u8])?;
        } else {
            t.poll_only.remove(keys::calendar(key))?;
        }
        Ok(())
    }

    pub fn poll_only(&self, key: &CalendarKey) -> Result<bool, StoreError> {
        let t = self.t()?;
        Ok(t.poll_only.contains_key(keys::calendar(key))?)
    }

    // ----- cursors -----

    pub fn cursor(&self, sink: &str) -> Result<Option<Seq>, StoreError> {
        let t = self.t()?;
        Ok(t.cursors
            .get(sink.as_bytes())?
            .and_then(|v| keys::decode_seq(&v)))
    }

    pub fn set_cursor(&self, sink: &str, seq: Seq) -> Result<(), StoreError> {
        let t = self.t()?;
        t.cursors.insert(sink.as_bytes(), &keys::seq(seq))?;
        Ok(())
    }

    /// The sink's state (default: enabled). A state that cannot be read
    /// keeps the sink disabled, with that as the reason, rather than
    /// delivering to a receiver that may have asked for nothing more.
    pub fn sink_state(&self, sink: &str) -> Result<SinkState, StoreError> {
        let t = self.t()?;
        Ok(match t.sink_state.get(sink.as_bytes())? {
            None => SinkState::default(),
            Some(v) => serde_json::from_slice(&v).unwrap_or_else(|e| SinkState {
                disabled: Some(SinkDisabled {
                    since: crate::time::Timestamp::now(),
                    reason: format!("the sink's stored state cannot be read ({e})"),
                }),
                enabled_at: None,
            }),
        })
    }

    fn put_sink_state(&self, sink: &str, state: &SinkState) -> Result<(), StoreError> {
        let t = self.t()?;
        let value = serde_json::to_vec(state)
            .map_err(|e| StoreError::Backend(format!("cannot encode a sink's state: {e}")))?;
        t.sink_state.insert(sink.as_bytes(), value)?;
        t.db.flush()?;
        Ok(())
    }

    /// Marks the sink disabled, durably: it stays so across restarts until
    /// [`Store::enable_sink`].
    pub fn disable_sink(&self, sink: &str, why: SinkDisabled) -> Result<(), StoreError> {
        let mut state = self.sink_state(sink)?;
        state.disabled = Some(why);
        self.put_sink_state(sink, &state)
    }

    /// Enables the sink (its lag counts from now at the earliest); true if
    /// it was disabled.
    pub fn enable_sink(&self, sink: &str) -> Result<bool, StoreError> {
        let state = self.sink_state(sink)?;
        self.put_sink_state(
            sink,
            &SinkState {
                disabled: None,
                enabled_at: Some(crate::time::Timestamp::now()),
            },
        )?;
        Ok(state.disabled.is_some())
    }

    /// See `Trees::failpoint`.
    pub(crate) fn failpoint(&self, name: &str) {
        if let Ok(t) = self.t() {
            t.failpoint(name);
        }
    }

    // ----- durability -----

    /// Makes every write so far durable (sled otherwise buffers up to 500 ms).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let t = self.t()?;
        t.db.flush_async().await?;
        Ok(())
    }

    /// Writes and flushes a small meta record: Ok once the store takes
    /// writes again after a failure.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        let t = self.t()?;
        let now = chrono::Utc::now().timestamp_millis().to_be_bytes();
        t.meta.insert(b"write_probe", &now)?;
        t.db.flush()?;
        Ok(())
    }

    /// [`Store::flush`] for code that is not async (shutdown, tests).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let t = self.t()?;
        t.db.flush()?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let t = self.t()?;
        Ok(t.db.size_on_disk()?)
    }
}

/// How long an open waits for the store's lock. sled releases it from its
/// background threads shortly after the last handle is dropped, so a store
/// reopened in the same process can find it still held for a moment.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match open_once(path) {
            Err(e) if is_locked(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// One attempt. sled 0.34 panics on some damaged files instead of
/// answering an error (seen: "tried to serialize Uninitialized" after a few
/// flipped bytes); such a panic is corruption too, so that the store is
/// moved aside instead of the daemon crash-looping on every start.
fn open_once(path: &Path) -> sled::Result<sled::Db> {
    let open = || {
        #[cfg(test)]
        if tests::PANICS_AT_OPEN.with(|n| n.replace(n.get().saturating_sub(1))) > 0 {
            panic!("tried to serialize Uninitialized");
        }
        sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(sled::Error::Unsupported(format!(
                "{SLED_PANICKED}: {}",
                what.chars().take(200).collect::<String>()
            )))
        }
    }
}

/// How [`open_once`] reports a panic inside sled's open.
const SLED_PANICKED: &str = "sled panicked while reading the store";

/// sled reports its flock failure as an Io error with this text (sled 0.34
/// config.rs try_lock); there is no typed variant.
fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Turns sled's open errors into ones that name the path and say what to do.
fn classify_open(e: sled::Error, path: &Path) -> StoreError {
    if is_locked(&e) {
        return StoreError::Locked {
            path: path.to_path_buf(),
        };
    }
    StoreError::Backend(format!("cannot open the store at {}: {e}", path.display()))
}

/// sled cannot read what is on disk: its own corruption check, or a `conf`
/// file it no longer recognises (what a torn write of it looks like).
fn is_corrupt(e: &sled::Error) -> bool {
    match e {
        sled::Error::Corruption { .. } => true,
        sled::Error::Unsupported(msg) => {
            msg.contains("failed to open database") || msg.starts_with(SLED_PANICKED)
        }
        _ => false,
    }
}

fn aside_name(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = path
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    let first = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    // Two recoveries within a second must not collide.
    (1..)
        .map(|n| path.with_file_name(format!("{name}.corrupt-{stamp}-{n}")))
        .find(|p| !p.exists())
        .filter(|_| first.exists())
        .unwrap_or(first)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail (string keys only).
    serde_json::to_vec(value).expect("store records serialize to JSON")
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Opens on this thread that panic the way sled does on some
        /// damaged files.
        pub(super) static PANICS_AT_OPEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_panic_inside_sleds_open_moves_the_store_aside_instead_of_crashing() {
        let dir =
            std::env::temp_dir().join(format!("gcal-syncd-unit-panic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("store");
        drop(Store::open(&path).expect("create"));
        PANICS_AT_OPEN.with(|n| n.set(1));
        let store = Store::open(&path).expect("recovered, not crashed");
        let aside = store
            .recovered_from()
            .map(Path::to_path_buf)
            .expect("moved aside");
        assert!(aside.join("db").exists(), "the old store is kept");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

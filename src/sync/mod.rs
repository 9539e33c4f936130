//! The sync engine: one task per calendar turns "something changed" into
//! exact change records. Woken by a coalescing [`Trigger`] (pings, the
//! safety-net poll, startup), it runs Google's incremental sync with the
//! stored sync token, falls back to a full sync (mark-and-sweep) on 410,
//! and hands every page to the feed writer as one atomic store write.
//! Never touches sockets, config files or channels.

mod diff;
mod engine;
mod pass;
mod plan;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub(crate) use diff::changed_fields;
pub(crate) use engine::{Engine, EngineDeps};

use crate::google::Urgency;
use crate::metrics::CalendarCounts;
use crate::store::CalendarKey;

/// Wakes one calendar's engine. Pokes that arrive while a pass runs
/// collapse into exactly one more pass: `Notify` keeps at most one permit.
#[derive(Clone, Default)]
pub struct Trigger(Arc<TriggerState>);

struct TriggerState {
    notify: Notify,
    /// When the engine's latest pass started.
    last_start: Mutex<Option<Instant>>,
    /// Whether the channel scheduler has been through the calendar once
    /// (made its channel, found one live, or failed trying). A flag and a
    /// `Notify` rather than a `watch` channel: one of those is several
    /// hundred bytes, per followed calendar.
    settled: AtomicBool,
    settled_notify: Notify,
    /// Raised by every poke: a pass waiting for quota in the background
    /// line goes to the urgent one.
    urgency: Urgency,
}

impl Default for TriggerState {
    fn default() -> Self {
        TriggerState {
            notify: Notify::new(),
            last_start: Mutex::new(None),
            settled: AtomicBool::new(false),
            settled_notify: Notify::new(),
            urgency: Urgency::default(),
        }
    }
}

impl Trigger {
    pub fn poke(&self) {
        self.0.urgency.raise();
        self.0.notify.notify_one();
    }

    /// Whether the calendar's requests go before background work.
    fn urgency(&self) -> &Urgency {
        &self.0.urgency
    }

    /// Makes sure a pass starts after `at`: pokes, unless one has started
    /// since. A channel created at `at` uses this: a pass that started
    /// after the channel existed saw every change the channel will not
    /// ping for, so another one would only spend quota.
    pub fn poke_unless_started_since(&self, at: Instant) {
        let started = self.0.last_start.lock().ok().and_then(|s| *s);
        if started.is_none_or(|s| s < at) {
            self.poke();
        }
    }

    /// The channel scheduler has been through the calendar once.
    pub fn channel_settled(&self) {
        self.0.settled.store(true, Ordering::Release);
        self.0.settled_notify.notify_waiters();
    }

    /// Waits until [`Trigger::channel_settled`].
    async fn wait_channel_settled(&self) {
        loop {
            // Registered before the flag is read, so a settle in between
            // still wakes it.
            let notified = self.0.settled_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.settled.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The engine starts a pass now.
    fn started(&self, at: Instant) {
        if let Ok(mut s) = self.0.last_start.lock() {
            *s = Some(at);
        }
    }

    /// Waits for the next poke (or the one already pending).
    pub async fn notified(&self) {
        self.0.notify.notified().await
    }

    /// Drops a pending poke (pokes absorbed by the debounce wait).
    fn absorb(&self) {
        use futures_util::FutureExt;
        let _ = self.0.notify.notified().now_or_never();
    }
}

/// Passes that may run at once (`sync.max_concurrent`), in two pools: the
/// passes pings ask for never queue behind start-up full syncs or polls.
#[derive(Clone)]
pub(crate) struct Permits {
    interactive: Arc<Semaphore>,
    background: Arc<Semaphore>,
}

impl Permits {
    pub(crate) fn new(max_concurrent: usize) -> Self {
        Permits {
            interactive: Arc::new(Semaphore::new(max_concurrent)),
            background: Arc::new(Semaphore::new(max_concurrent)),
        }
    }

    /// A permit for a pass: an incremental one takes it from the
    /// interactive pool when its calendar was pinged (before or while it
    /// waits), any other from the background pool.
    async fn acquire(
        &self,
        urgency: &Urgency,
        incremental: bool,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        let background = self.background.clone().acquire_owned();
        if !incremental {
            return background.await;
        }
        urgency
            .race(background, self.interactive.clone().acquire_owned())
            .await
    }
}

/// How the engines sync (from `[sync]`).
#[derive(Debug, Clone)]
pub(crate) struct SyncSettings {
    pub page_size: u32,
    pub single_events: bool,
    pub poll_interval: Duration,
    pub debounce: Duration,
    /// First retry delay after a transient failure (doubles, capped at 5 min).
    pub retry_base: Duration,
}

/// Full-sync progress, shown in `/v1/calendars` and the logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub events: u64,
    pub pages: u64,
}

/// What an engine is doing, as `/v1/calendars` and `status` show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineState {
    #[default]
    Starting,
    Idle,
    Incremental,
    FullSync,
    Resync,
    /// The last attempt failed; the engine waits to retry.
    Backoff,
}

/// Which kind of pass ran: the `kind` label of the pass metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum PassKind {
    #[default]
    Incremental,
    /// The first sync of a calendar (no token stored).
    Full,
    /// A full sync after Google refused the stored token (410).
    Resync,
}

impl PassKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PassKind::Incremental => "incremental",
            PassKind::Full => "full",
            PassKind::Resync => "resync",
        }
    }

    /// The engine state while a pass of this kind runs.
    pub(crate) fn state(self) -> EngineState {
        match self {
            PassKind::Incremental => EngineState::Incremental,
            PassKind::Full => EngineState::FullSync,
            PassKind::Resync => EngineState::Resync,
        }
    }
}

/// What an engine is doing now. Each engine writes only its own entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveStatus {
    pub state: EngineState,
    pub progress: Option<Progress>,
    pub last_error: Option<String>,
    /// Passes completed since start.
    pub passes: u64,
    /// What the calendar's metrics count (read at scrape time).
    #[serde(skip)]
    pub counts: CalendarCounts,
}

/// Live status of every engine, for the local API. Each engine task writes
/// its own key; the API only reads.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<RwLock<BTreeMap<CalendarKey, LiveStatus>>>);

impl StatusBoard {
    pub fn get(&self, key: &CalendarKey) -> Option<LiveStatus> {
        self.0.read().ok()?.get(key).cloned()
    }

    /// What the calendar's metrics count (zero before its first pass).
    pub fn counts(&self, key: &CalendarKey) -> CalendarCounts {
        (self.0.read().ok()).map_or_else(CalendarCounts::default, |b| {
            b.get(key).map(|s| s.counts).unwrap_or_default()
        })
    }

    fn update(&self, key: &CalendarKey, f: impl FnOnce(&mut LiveStatus)) {
        if let Ok(mut board) = self.0.write() {
            f(board.entry(key.clone()).or_default());
        }
    }

    /// How many of `keys` have completed a pass since start.
    pub fn synced(&self, keys: &[CalendarKey]) -> usize {
        let Ok(board) = self.0.read() else { return 0 };
        keys.iter()
            .filter(|k| board.get(*k).is_some_and(|s| s.passes > 0))
            .count()
    }

    pub fn remove(&self, key: &CalendarKey) {
        if let Ok(mut board) = self.0.write() {
            board.remove(key);
        }
    }
}

/// Writes a final `deleted` record for every event of a calendar that left
/// the configuration and removes its events, in pages of [`PURGE_PAGE`]
/// events (so that a big calendar is never held in memory whole). Returns
/// the number of records.
///
/// The sync token goes first, in a write of its own: a purge cut short (a
/// crash, a full disk) leaves events without a token. Should the calendar
/// come back, its next pass is then a full sync diffed against what is
/// left, which reports the purged events as created; with the token kept,
/// an incremental pass would never have reported them again. A purge cut
/// short is finished at the next start (see the accounts supervisor).
pub(crate) async fn purge_calendar(
    store: &crate::store::Store,
    feed: &crate::feed::Feed,
    key: &CalendarKey,
) -> Result<usize, crate::store::StoreError> {
    use crate::store::PageWrite;
    let now = crate::time::Timestamp::now();
    let mut state = store.calendar(key)?;
    let write = |deletes, changes, state| PageWrite {
        calendar: key.clone(),
        upserts: vec![],
        deletes,
        changes,
        state,
    };
    if state.sync_token.take().is_some() {
        feed.apply(write(vec![], vec![], state.clone())).await?;
    }
    let mut n = 0;
    loop {
        // Each page removes what it read, so the next scan starts past it.
        let mut deletes = Vec::new();
        let mut changes = Vec::new();
        for event in store.events(key).take(PURGE_PAGE) {
            let event = event?;
            let hidden = crate::store::EventStatus::of(event.status.as_deref())
                == crate::store::EventStatus::Cancelled;
            deletes.push(event.id.clone());
            if hidden {
                continue; // a hidden occurrence was reported when it was hidden
            }
            changes.push(tombstone_record(key, event, now));
        }
        let last = deletes.len() < PURGE_PAGE;
        n += changes.len();
        if last {
            state = crate::store::CalendarState::default();
        }
        feed.apply(write(deletes, changes, state.clone())).await?;
        store.failpoint("abort_after_purge_page");
        if last {
            return Ok(n);
        }
    }
}

/// Events per page when a removed calendar is purged.
const PURGE_PAGE: usize = 2500;

/// Delay before retrying after failure number `attempt` (1, 2, ...): `base`
/// doubling up to 5 minutes, +-20% jitter; a longer `Retry-After` from
/// Google wins. Never gives up: the daemon must outlive outages.
pub(crate) fn retry_delay(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(300));
    jitter(capped, 0.2).max(retry_after.unwrap_or_default())
}

/// `d` changed by a random factor in [1 - frac, 1 + frac].
pub(crate) fn jitter(d: Duration, frac: f64) -> Duration {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - frac + 2.0 * frac * unit)
}

/// The `deleted` record of a stored event that is gone without a tombstone
/// from Google (swept by a full sync, or its calendar was removed).
fn tombstone_record(
    key: &CalendarKey,
    stored: crate::store::EventVersion,
    now: crate::time::Timestamp,
) -> crate::store::ChangeRecord<crate::store::Body> {
    let tombstone =
        serde_json::json!({ "kind": "calendar#event", "id": stored.id, "status": "cancelled" });
    crate::store::ChangeRecord {
        seq: crate::store::Seq::ZERO, // assigned by the feed writer
        account: key.account.clone(),
        calendar_id: key.calendar_id.clone(),
        event_id: stored.id,
        change: crate::store::ChangeKind::Deleted,
        etag: None,
        sequence: None,
        updated: None,
        changed_fields: vec![],
        event: crate::store::Body::New(tombstone.into()),
        previous: Some(stored.body),
        detected_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_the_channel_ends_on_a_settle_before_or_during_the_wait() {
        use futures_util::FutureExt;
        let before = Trigger::default();
        before.channel_settled();
        assert!(before.wait_channel_settled().now_or_never().is_some());

        let during = Trigger::default();
        let waiter = tokio::spawn({
            let t = during.clone();
            async move { t.wait_channel_settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        during.channel_settled();
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the settle woke the waiter")
            .expect("the waiter ran");
    }

    #[test]
    fn retry_delay_doubles_caps_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        let d1 = retry_delay(base, 1, None);
        assert!(
            d1 >= Duration::from_millis(800) && d1 <= Duration::from_millis(1200),
            "{d1:?}"
        );
        let d3 = retry_delay(base, 3, None);
        assert!(
            d3 >= Duration::from_millis(3200) && d3 <= Duration::from_millis(4800),
            "{d3:?}"
        );
        assert!(retry_delay(base, 40, None) <= Duration::from_secs(360));
        assert_eq!(
            retry_delay(base, 1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pokes_during_a_pass_collapse_into_one() {
        let t = Trigger::default();
        for _ in 0..1000 {
            t.poke();
        }
        t.notified().await; // the one stored permit
        let second = tokio::time::timeout(Duration::from_secs(1), t.notified()).await;
        assert!(second.is_err(), "a thousand pokes left more than one pass");
    }
}

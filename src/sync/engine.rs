//! The per-calendar loop: wait for a poke, the poll timer or startup; take a
//! concurrency permit; run a pass; log one summary line; back off on
//! failure. Cancellation is seen between pages and during every wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pass::PassError;
use super::{jitter, retry_delay, EngineState, Permits, StatusBoard, SyncSettings, Trigger};
use crate::feed::Feed;
use crate::google::{GoogleClient, GoogleError};
use crate::metrics::{CalendarLabels, Metrics, PassLabels, ReasonLabels};
use crate::store::{CalendarKey, Store};

/// One calendar's sync task and the handles it needs.
pub(crate) struct Engine {
    pub(super) key: CalendarKey,
    pub(super) google: Arc<GoogleClient>,
    pub(super) store: Store,
    pub(super) feed: Feed,
    pub(super) settings: SyncSettings,
    pub(super) board: StatusBoard,
    pub(super) stop: CancellationToken,
    pub(super) trigger: Trigger,
    permits: Permits,
    pub(super) metrics: Metrics,
}

/// The daemon-wide handles every engine gets.
#[derive(Clone)]
pub(crate) struct EngineDeps {
    pub store: Store,
    pub feed: Feed,
    pub board: StatusBoard,
    /// Passes that may run at once (`sync.max_concurrent`).
    pub permits: Permits,
    pub metrics: Metrics,
}

impl Engine {
    pub(crate) fn new(
        key: CalendarKey,
        google: Arc<GoogleClient>,
        settings: SyncSettings,
        trigger: Trigger,
        stop: CancellationToken,
        deps: EngineDeps,
    ) -> Self {
        let EngineDeps {
            store,
            feed,
            board,
            permits,
            metrics,
        } = deps;
        Engine {
            metrics,
            key,
            google,
            store,
            feed,
            settings,
            board,
            stop,
            trigger,
            permits,
        }
    }

    /// Runs until `stop`: a pass at start, then one per poke or poll.
    pub(crate) async fn run(self) {
        self.set_state(EngineState::Starting, None);
        let mut next_poll = Instant::now();
        // Set after a failure needing a person: not even a ping retries
        // before it.
        let mut not_before = Instant::now();
        let mut last_attempt = Instant::now();
        let mut failures = 0u32;
        if Box::pin(self.first_sync_waits_for_channel()).await {
            return;
        }
        loop {
            let pinged = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.trigger.notified() => {
                    // Debounce: a ping can precede the change; later pings join
                    // this pass. After a passing failure a genuine ping retries
                    // at once, but at most once per retry_base, so a failing
                    // Google is not hammered.
                    let mut wake = later(Instant::now(), self.settings.debounce).max(not_before);
                    if failures > 0 {
                        wake = wake.max(later(last_attempt, self.settings.retry_base));
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep_until(wake) => {}
                    }
                    true
                }
                _ = tokio::time::sleep_until(next_poll) => false,
            };
            // What a ping asked for goes before start-up, polls and
            // channels: its own permits, and the reserve of the quota (a
            // ping while the pass waits for either makes it urgent too).
            let incremental = self.has_sync_token();
            let urgency = self.trigger.urgency();
            urgency.set(pinged && incremental);
            let permit = tokio::select! {
                _ = self.stop.cancelled() => return,
                p = self.permits.acquire(urgency, incremental) => match p { Ok(p) => p, Err(_) => return },
            };
            // Pokes until now (those the debounce gathered, those that came
            // while waiting for the permit, the one a new channel left) are
            // all answered by this pass: it lists after them.
            self.trigger.absorb();
            let started = Instant::now();
            self.trigger.started(started);
            last_attempt = started;
            // Boxed: a pass's state (pages, plans) lives on the heap only
            // while it runs, instead of inside every idle engine's task.
            let result = Box::pin(self.pass()).await;
            drop(permit);
            match result {
                Ok(stats) => {
                    self.count_pass(stats.kind.as_str(), "ok");
                    let labels = self.labels();
                    self.metrics
                        .last_success
                        .get_or_create(&labels)
                        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                    failures = 0;
                    not_before = Instant::now();
                    // Never more often than the account's quota allows.
                    let every = self.settings.poll_interval.max(self.google.poll_floor());
                    next_poll = later(Instant::now(), jitter(every, 0.25));
                    self.board.update(&self.key, |s| {
                        s.state = EngineState::Idle;
                        s.progress = None;
                        s.last_error = None;
                        s.passes += 1;
                    });
                    tracing::info!(
                        account = %self.key.account, calendar = %self.key.calendar_id, kind = stats.kind.as_str(),
                        pages = stats.pages, items = stats.items, records = stats.records,
                        duration_ms = started.elapsed().as_millis() as u64, "sync pass done"
                    );
                }
                Err(PassError::Stopped) => return,
                Err(e) => {
                    self.count_pass("any", "error");
                    if let PassError::Google(g) = &e {
                        self.metrics
                            .google_errors
                            .get_or_create(&ReasonLabels {
                                reason: g.reason().to_string(),
                            })
                            .inc();
                    }
                    failures += 1;
                    let person = e.needs_person();
                    // A person's fix takes minutes: start near the 5-minute cap.
                    let attempt = if person { failures + 8 } else { failures };
                    let delay = retry_delay(self.settings.retry_base, attempt, None);
                    next_poll = later(Instant::now(), delay);
                    not_before = if person { next_poll } else { Instant::now() };
                    let message = describe(&e);
                    if matches!(e, PassError::Store(_)) && self.feed.failure().is_some() {
                        // The feed writer is reopening the store: retry the
                        // moment it takes writes, not after a grown backoff.
                        self.show_error(&message);
                        tracing::warn!(account = %self.key.account, calendar = %self.key.calendar_id, error = %message, "sync pass failed: the store cannot be written; retrying once it can");
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = self.feed.writable() => {}
                        }
                        next_poll = Instant::now();
                        continue;
                    }
                    Box::pin(self.record_error(&message)).await;
                    tracing::warn!(account = %self.key.account, calendar = %self.key.calendar_id, error = %message, retry_in = ?delay, "sync pass failed");
                }
            }
        }
    }

    /// Watch first, then list: a calendar never synced waits (at most
    /// [`CHANNEL_WAIT`]) for the channel scheduler to make its channel, so
    /// that its full sync covers every change the channel will not ping
    /// for, and no second listing is needed once the channel exists. A
    /// calendar with a sync token catches up at once (that listing is
    /// small, and its changes are news). True when the daemon stops.
    async fn first_sync_waits_for_channel(&self) -> bool {
        if self.has_sync_token() {
            return false;
        }
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = self.trigger.wait_channel_settled() => false,
            _ = tokio::time::sleep(CHANNEL_WAIT) => {
                tracing::info!(account = %self.key.account, calendar = %self.key.calendar_id, waited = ?CHANNEL_WAIT, "the calendar has no channel yet; full sync without waiting longer");
                false
            }
        }
    }

    /// Whether the next pass is incremental (an unreadable store counts as
    /// not: the pass then fails on its own).
    fn has_sync_token(&self) -> bool {
        self.store
            .calendar(&self.key)
            .is_ok_and(|s| s.sync_token.is_some())
    }

    pub(super) fn labels(&self) -> CalendarLabels {
        CalendarLabels {
            account: self.key.account.clone(),
            calendar: self.key.calendar_id.clone(),
        }
    }

    fn count_pass(&self, kind: &'static str, result: &'static str) {
        let labels = PassLabels {
            account: self.key.account.clone(),
            calendar: self.key.calendar_id.clone(),
            kind,
            result,
        };
        self.metrics.sync_passes.get_or_create(&labels).inc();
    }

    /// Shows the failure in status (live only).
    fn show_error(&self, message: &str) {
        self.board.update(&self.key, |s| {
            s.state = EngineState::Backoff;
            s.progress = None;
            s.last_error = Some(message.to_string());
        });
    }

    /// Shows the failure and keeps it in the calendar's stored state.
    async fn record_error(&self, message: &str) {
        self.show_error(message);
        if let Ok(mut state) = self.store.calendar(&self.key) {
            state.last_error = Some(message.to_string());
            if let Err(e) = self.feed.put_state(&self.key, state).await {
                tracing::warn!(error = %e, "cannot record the sync error in the store");
            }
        }
    }
}

/// How long a first full sync waits for the calendar's channel: long
/// enough for the scheduler to watch thousands of calendars at Google's
/// quota, short enough that a stuck scheduler delays nothing for long.
const CHANNEL_WAIT: Duration = Duration::from_secs(20 * 60);

/// `from + d`, or a month from `from` where that overflows the clock.
fn later(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 86_400))
}

fn describe(e: &PassError) -> String {
    match e {
        PassError::Google(GoogleError::Unauthorized(m)) => format!("needs re-authorisation: {m}"),
        other => other.to_string(),
    }
}

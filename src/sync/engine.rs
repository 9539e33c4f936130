//! The per-calendar loop: wait for a poke, the poll timer or startup; take a
//! concurrency permit; run a pass; log one summary line; back off on
//! failure. Cancellation is seen between pages and during every wait.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pass::PassError;
use super::{
    jitter, retry_delay, EngineState, PassKind, Permits, StatusBoard, SyncSettings, Trigger,
};
use crate::feed::Feed;
use crate::google::{GoogleClient, GoogleError};
use crate::metrics::{Metrics, ReasonLabels};
use crate::store::{CalendarKey, Store};

/// One calendar's sync task and the handles it needs. Kept small: an idle
/// engine is a task per followed calendar, so the daemon-wide handles are
/// shared behind one `Arc`.
pub(crate) struct Engine {
    pub(super) key: CalendarKey,
    pub(super) google: Arc<GoogleClient>,
    pub(super) settings: SyncSettings,
    pub(super) stop: CancellationToken,
    pub(super) trigger: Trigger,
    pub(super) deps: Arc<EngineDeps>,
}

/// The daemon-wide handles every engine shares.
pub(crate) struct EngineDeps {
    pub store: Store,
    pub feed: Feed,
    pub board: StatusBoard,
    /// Passes that may run at once (`sync.max_concurrent`).
    pub permits: Permits,
    pub metrics: Metrics,
}

/// When an engine syncs next, and how its failures back off.
struct Schedule {
    next_poll: Instant,
    /// Set after a failure needing a person: not even a ping retries
    /// before it.
    not_before: Instant,
    last_attempt: Instant,
    failures: u32,
}

impl Engine {
    pub(crate) fn new(
        key: CalendarKey,
        google: Arc<GoogleClient>,
        settings: SyncSettings,
        trigger: Trigger,
        stop: CancellationToken,
        deps: Arc<EngineDeps>,
    ) -> Self {
        Engine {
            key,
            google,
            settings,
            stop,
            trigger,
            deps,
        }
    }

    /// Runs until `stop`: a pass at start, then one per poke or poll.
    /// While idle the task holds only the engine and this wait; a turn's
    /// state (debounce, permit, pass) is boxed and lives only while it runs.
    ///
    /// A function returning an `async move` block rather than an `async fn`:
    /// the `async fn` moved its argument into a second slot of the future
    /// (624 bytes against 520, release build), and an engine's future lives
    /// as long as the daemon.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn's future is bigger, and one lives per calendar"
    )]
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            self.set_state(EngineState::Starting, None);
            let now = Instant::now();
            let mut schedule = Schedule {
                next_poll: now,
                not_before: now,
                last_attempt: now,
                failures: 0,
            };
            if Box::pin(self.first_sync_waits_for_channel()).await {
                return;
            }
            loop {
                let pinged = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = self.trigger.notified() => true,
                    _ = tokio::time::sleep_until(schedule.next_poll) => false,
                };
                if Box::pin(self.turn(pinged, &mut schedule)).await.is_break() {
                    return;
                }
            }
        }
    }

    /// One wake-up: the debounce of a ping, a permit, a pass, and what its
    /// outcome sets for the next one. Break when the daemon stops.
    async fn turn(&self, pinged: bool, schedule: &mut Schedule) -> ControlFlow<()> {
        if pinged {
            // Debounce: a ping can precede the change; later pings join
            // this pass. After a passing failure a genuine ping retries at
            // once, but at most once per retry_base, so a failing Google is
            // not hammered.
            let mut wake = later(Instant::now(), self.settings.debounce).max(schedule.not_before);
            if schedule.failures > 0 {
                wake = wake.max(later(schedule.last_attempt, self.settings.retry_base));
            }
            tokio::select! {
                _ = self.stop.cancelled() => return ControlFlow::Break(()),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // What a ping asked for goes before start-up, polls and channels:
        // its own permits, and the reserve of the quota (a ping while the
        // pass waits for either makes it urgent too).
        let incremental = self.has_sync_token();
        let urgency = self.trigger.urgency();
        urgency.set(pinged && incremental);
        let permit = tokio::select! {
            _ = self.stop.cancelled() => return ControlFlow::Break(()),
            p = self.deps.permits.acquire(urgency, incremental) => match p { Ok(p) => p, Err(_) => return ControlFlow::Break(()) },
        };
        // Pokes until now (those the debounce gathered, those that came
        // while waiting for the permit, the one a new channel left) are all
        // answered by this pass: it lists after them.
        self.trigger.absorb();
        let started = Instant::now();
        self.trigger.started(started);
        schedule.last_attempt = started;
        let result = self.pass().await;
        drop(permit);
        match result {
            Ok(stats) => {
                schedule.failures = 0;
                schedule.not_before = Instant::now();
                // Never more often than the account's quota allows.
                let every = self.settings.poll_interval.max(self.google.poll_floor());
                schedule.next_poll = later(Instant::now(), jitter(every, 0.25));
                self.deps.board.update(&self.key, |s| {
                    s.state = EngineState::Idle;
                    s.progress = None;
                    s.last_error = None;
                    s.passes += 1;
                    let c = &mut s.counts;
                    match stats.kind {
                        PassKind::Incremental => c.incremental += 1,
                        PassKind::Full => c.full += 1,
                        PassKind::Resync => c.resync += 1,
                    }
                });
                tracing::info!(
                    account = %self.key.account, calendar = %self.key.calendar_id, kind = stats.kind.as_str(),
                    pages = stats.pages, items = stats.items, records = stats.records,
                    duration_ms = started.elapsed().as_millis() as u64, "sync pass done"
                );
            }
            Err(PassError::Stopped) => return ControlFlow::Break(()),
            Err(e) => {
                if let PassError::Google(g) = &e {
                    self.deps
                        .metrics
                        .google_errors
                        .get_or_create(&ReasonLabels {
                            reason: g.reason().to_string(),
                        })
                        .inc();
                }
                schedule.failures += 1;
                let person = e.needs_person();
                // A person's fix takes minutes: start near the 5-minute cap.
                let attempt = if person {
                    schedule.failures + 8
                } else {
                    schedule.failures
                };
                let delay = retry_delay(self.settings.retry_base, attempt, None);
                schedule.next_poll = later(Instant::now(), delay);
                schedule.not_before = if person {
                    schedule.next_poll
                } else {
                    Instant::now()
                };
                let message = describe(&e);
                if matches!(e, PassError::Store(_)) && self.deps.feed.failure().is_some() {
                    // The feed writer is reopening the store: retry the
                    // moment it takes writes, not after a grown backoff.
                    self.show_error(&message);
                    tracing::warn!(account = %self.key.account, calendar = %self.key.calendar_id, error = %message, "sync pass failed: the store cannot be written; retrying once it can");
                    tokio::select! {
                        _ = self.stop.cancelled() => return ControlFlow::Break(()),
                        _ = self.deps.feed.writable() => {}
                    }
                    schedule.next_poll = Instant::now();
                    return ControlFlow::Continue(());
                }
                self.record_error(&message).await;
                tracing::warn!(account = %self.key.account, calendar = %self.key.calendar_id, error = %message, retry_in = ?delay, "sync pass failed");
            }
        }
        ControlFlow::Continue(())
    }

    /// Watch first, then list: a calendar never synced waits (at most
    /// [`channel_wait`]) for the channel scheduler to make its channel, so
    /// that its full sync covers every change the channel will not ping
    /// for, and no second listing is needed once the channel exists. A
    /// calendar with a sync token catches up at once (that listing is
    /// small, and its changes are news). True when the daemon stops.
    async fn first_sync_waits_for_channel(&self) -> bool {
        if self.has_sync_token() {
            return false;
        }
        let wait = channel_wait(self.google.renewal_time());
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = self.trigger.wait_channel_settled() => false,
            _ = tokio::time::sleep(wait) => {
                tracing::info!(account = %self.key.account, calendar = %self.key.calendar_id, waited = ?wait, "the calendar has no channel yet; full sync without waiting longer");
                false
            }
        }
    }

    /// Whether the next pass is incremental (an unreadable store counts as
    /// not: the pass then fails on its own).
    fn has_sync_token(&self) -> bool {
        self.deps
            .store
            .calendar(&self.key)
            .is_ok_and(|s| s.sync_token.is_some())
    }

    /// Shows a failed pass in status and counts it (live only).
    fn show_error(&self, message: &str) {
        self.deps.board.update(&self.key, |s| {
            s.counts.failed += 1;
            s.state = EngineState::Backoff;
            s.progress = None;
            s.last_error = Some(message.to_string());
        });
    }

    /// Shows the failure and keeps it in the calendar's stored state.
    async fn record_error(&self, message: &str) {
        self.show_error(message);
        if let Ok(mut state) = self.deps.store.calendar(&self.key) {
            state.last_error = Some(message.to_string());
            if let Err(e) = self.deps.feed.put_state(&self.key, state).await {
                tracing::warn!(error = %e, "cannot record the sync error in the store");
            }
        }
    }
}

/// How long a first full sync waits for the calendar's channel: long
/// enough for the scheduler to reach the last calendar of a start-up,
/// short enough that a stuck scheduler delays nothing for long. A start-up
/// costs two background calls per calendar (a watch and a list), which is
/// what `renewal` (the time to replace every channel of the account, two
/// calls each) measures; a quarter more for slack, and 20 minutes at
/// least. With a fixed 20 minutes, a start-up of 10,000 calendars at
/// 600/min (36 minutes at the floor) let the last 4000 or so list before
/// their channel existed, and list again once it did.
fn channel_wait(renewal: Duration) -> Duration {
    renewal.mul_f64(1.25).max(Duration::from_secs(20 * 60))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_sync_waits_for_its_channel_as_long_as_the_start_up_can_take() {
        let minutes = |d: Duration| d.as_secs() / 60;
        // Few calendars: 20 minutes, for a scheduler that is slow to start.
        assert_eq!(minutes(channel_wait(Duration::ZERO)), 20);
        // 10,000 calendars at 600/min: 20,000 background calls at 570 per
        // 62 s (Limiter::background_time) take 36 minutes.
        let renewal = Duration::from_secs(20_000 * 62 / 570);
        assert_eq!(minutes(renewal), 36);
        assert_eq!(minutes(channel_wait(renewal)), 45);
    }
}

//! One sync pass of one calendar: incremental with the stored token, or a
//! full sync with mark-and-sweep, page by page, each page one atomic write
//! through the feed. Transient Google errors are retried per page, so a
//! long full sync survives a flaky network without starting over.

use std::collections::HashMap;
use std::time::Instant;

use super::plan::{self, Plan};
use super::{retry_delay, EngineState, LiveStatus, PassKind, Progress};
use crate::google::{EventHead, EventsPage, GoogleError, ListParams};
use crate::rawjson::RawJson;
use crate::store::{CalendarState, EventStatus, PageWrite, StoreError};
use crate::time::Timestamp;

use super::engine::Engine;

/// Why a pass ended without finishing.
#[derive(Debug, thiserror::Error)]
pub(super) enum PassError {
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stopped")]
    Stopped,
    /// An item Google listed cannot be used (no string `id`). The page is
    /// not written and the token not advanced, so the change is not lost:
    /// the pass fails and is retried.
    #[error("events.list returned an item with {0}; the page was not written")]
    UnusableItem(&'static str),
    /// Google's glitch, retried like any passing failure.
    #[error("the last page of events.list carried no nextSyncToken; the page was not written")]
    MissingSyncToken,
}

impl PassError {
    /// Only a person can fix it (credentials revoked, access removed, a
    /// request Google will always refuse): wait long. Anything else passes
    /// by itself and is retried from `sync.retry_base`, doubling.
    pub(super) fn needs_person(&self) -> bool {
        matches!(
            self,
            PassError::Google(
                GoogleError::Auth(_) | GoogleError::Rejected { .. } | GoogleError::NotFound(_)
            )
        )
    }
}

/// What a pass did, for the one-line summary.
#[derive(Debug, Default)]
pub(super) struct PassStats {
    pub kind: PassKind,
    pub pages: u64,
    pub items: u64,
    pub records: u64,
}

/// An outage of events.list is logged (WARN) and shown in status after
/// this many failed attempts in a row; the first ones are usual blips.
const WARN_AFTER_FAILURES: u32 = 3;

/// Logs full-sync progress at most this often.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// Runs one pass: incremental when a token is stored, else full; a 410
    /// turns the incremental pass into a full resync. An incremental
    /// pass's requests are urgent when its calendar was pinged (see
    /// [`Trigger`](super::Trigger)); a full sync's are background work.
    pub(super) async fn pass(&self) -> Result<PassStats, PassError> {
        let mut state = self.deps.store.calendar(&self.key)?;
        let Some(token) = state.sync_token.clone() else {
            return self.full(state, PassKind::Full).await;
        };
        match self.incremental(state.clone(), &token).await {
            Err(PassError::Google(GoogleError::SyncTokenGone { status, reason })) => {
                tracing::info!(account = %self.key.account, calendar = %self.key.calendar_id, status, reason, "sync token no longer valid; full resync");
                state.sync_token = None;
                self.deps.feed.put_state(&self.key, state.clone()).await?;
                self.full(state, PassKind::Resync).await
            }
            other => other,
        }
    }

    async fn incremental(
        &self,
        mut state: CalendarState,
        token: &str,
    ) -> Result<PassStats, PassError> {
        self.set_state(EngineState::Incremental, Some(Progress::default()));
        let mut stats = PassStats {
            kind: PassKind::Incremental,
            ..Default::default()
        };
        let mut page_token: Option<String> = None;
        loop {
            let params = self.params(Some(token), page_token.as_deref(), true);
            let page = self.fetch(&params).await?;
            stats.pages += 1;
            stats.items += page.items.len() as u64;
            let plan = self.plan(page.items, None).await?;
            let last = page.next_page_token.is_none();
            if last {
                state.sync_token = Some(
                    page.next_sync_token
                        .clone()
                        .ok_or(PassError::MissingSyncToken)?,
                );
                self.succeeded(&mut state);
            }
            stats.records += plan.changes.len() as u64;
            self.write(plan, &state).await?;
            self.set_progress(Progress {
                events: stats.items,
                pages: stats.pages,
            });
            match page.next_page_token {
                Some(next) => page_token = Some(next),
                None => return Ok(stats),
            }
        }
    }

    async fn full(&self, mut state: CalendarState, kind: PassKind) -> Result<PassStats, PassError> {
        state.generation += 1;
        let generation = state.generation;
        // Every event this pass stores is stamped with its generation, so
        // when it starts on an empty calendar there is nothing to sweep (and
        // the first sync of a big calendar need not read it all back).
        let fresh = !self.deps.store.has_events(&self.key)?;
        let mut stats = PassStats {
            kind,
            ..Default::default()
        };
        let started = Instant::now();
        let mut logged = Instant::now();
        let mut page_token: Option<String> = None;
        self.set_state(kind.state(), Some(Progress::default()));
        loop {
            let params = self.params(None, page_token.as_deref(), false);
            let page = self.fetch(&params).await?;
            stats.pages += 1;
            stats.items += page.items.len() as u64;
            let mut plan = self.plan(page.items, Some(generation)).await?;
            let last = page.next_page_token.is_none();
            if last && !fresh {
                plan = self.sweep(plan, generation).await?;
            }
            if last {
                state.sync_token = Some(
                    page.next_sync_token
                        .clone()
                        .ok_or(PassError::MissingSyncToken)?,
                );
                self.succeeded(&mut state);
            }
            stats.records += plan.changes.len() as u64;
            self.write(plan, &state).await?;
            self.set_progress(Progress {
                events: stats.items,
                pages: stats.pages,
            });
            if logged.elapsed() >= PROGRESS_EVERY && !last {
                logged = Instant::now();
                let rate = stats.items as f64 / started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(account = %self.key.account, calendar = %self.key.calendar_id, events = stats.items, pages = stats.pages, rate = format_args!("{rate:.0}/s"), "full sync progress");
            }
            match page.next_page_token {
                Some(next) => page_token = Some(next),
                None => return Ok(stats),
            }
        }
    }

    fn params<'a>(
        &'a self,
        sync_token: Option<&'a str>,
        page_token: Option<&'a str>,
        incremental: bool,
    ) -> ListParams<'a> {
        ListParams {
            single_events: self.settings.single_events,
            max_results: self.settings.page_size,
            sync_token,
            page_token,
            urgency: incremental.then(|| self.trigger.urgency()),
        }
    }

    /// One page, retrying transient failures with backoff until it comes or
    /// the daemon stops.
    async fn fetch(&self, params: &ListParams<'_>) -> Result<EventsPage, PassError> {
        let mut attempt = 0;
        // A ping cut a backoff short: its change must get a pass of its own.
        let mut pinged = false;
        // The state shown again once an outage ends.
        let resumed = self
            .deps
            .board
            .get(&self.key)
            .map_or(EngineState::Incremental, |s| s.state);
        loop {
            let attempted = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = self.stop.cancelled() => return Err(PassError::Stopped),
                r = self.google.events_list(&self.key.calendar_id, params) => r,
            };
            match result {
                Ok(page) => {
                    if pinged {
                        self.trigger.poke();
                    }
                    if attempt >= WARN_AFTER_FAILURES {
                        tracing::info!(account = %self.key.account, calendar = %self.key.calendar_id, attempts = attempt + 1, "events.list answers again");
                        self.deps.board.update(&self.key, |s| {
                            s.state = resumed;
                            s.last_error = None;
                        });
                    }
                    let items = page.items.len() as u64;
                    self.deps.board.update(&self.key, |s| {
                        s.counts.list_calls += 1;
                        s.counts.list_items += items;
                    });
                    return Ok(page);
                }
                Err(e) if e.is_transient() => {
                    self.deps
                        .metrics
                        .google_errors
                        .get_or_create(&crate::metrics::ReasonLabels {
                            reason: e.reason().to_string(),
                        })
                        .inc();
                    attempt += 1;
                    let retry_after = match &e {
                        GoogleError::RateLimited { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = retry_delay(self.settings.retry_base, attempt, retry_after);
                    if attempt == WARN_AFTER_FAILURES {
                        tracing::warn!(account = %self.key.account, calendar = %self.key.calendar_id, error = %e, attempts = attempt, retry_in = ?delay, "events.list keeps failing; retrying with backoff");
                    } else {
                        tracing::debug!(account = %self.key.account, calendar = %self.key.calendar_id, error = %e, retry_in = ?delay, "events.list failed; retrying");
                    }
                    if attempt >= WARN_AFTER_FAILURES {
                        let message = e.to_string();
                        self.deps.board.update(&self.key, |s| {
                            s.state = EngineState::Backoff;
                            s.last_error = Some(message);
                        });
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(PassError::Stopped),
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.trigger.notified() => {
                            // A genuine ping: retry now, but at most once per
                            // retry_base, so a failing Google is not hammered.
                            pinged = true;
                            let at = attempted + self.settings.retry_base;
                            tokio::select! {
                                _ = self.stop.cancelled() => return Err(PassError::Stopped),
                                _ = tokio::time::sleep_until(at) => {}
                            }
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Turns a page of items into versions to store and change records:
    /// reads what the planner needs from the store and plans, off the
    /// async workers. `generation` is set in full syncs.
    async fn plan(&self, items: Vec<RawJson>, generation: Option<u64>) -> Result<Plan, PassError> {
        let (store, key) = (self.deps.store.clone(), self.key.clone());
        let now = Timestamp::now();
        tokio::task::spawn_blocking(move || {
            let items: Vec<(EventHead, RawJson)> =
                items.into_iter().map(|i| (EventHead::of(&i), i)).collect();
            let mut stored = HashMap::new();
            for id in plan::wanted(items.iter().map(|(h, _)| h)) {
                if let Some(v) = store.event(&key, &id)? {
                    stored.insert(id, v);
                }
            }
            let mut bodies = HashMap::new();
            for id in plan::bodies_wanted(items.iter().map(|(h, _)| h), &stored) {
                bodies.insert(id, store.body(id)?);
            }
            plan::plan(&key, items, &stored, &bodies, generation, now)
                .map_err(|plan::Unusable(what)| PassError::UnusableItem(what))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("planning task failed: {e}")))?
    }

    /// After the last page of a full sync: every stored event that no page
    /// listed (and that this page does not touch) was deleted meanwhile.
    async fn sweep(&self, mut plan: Plan, generation: u64) -> Result<Plan, PassError> {
        let (store, key) = (self.deps.store.clone(), self.key.clone());
        let now = Timestamp::now();
        tokio::task::spawn_blocking(move || {
            for stored in store.events(&key) {
                let stored = stored?;
                if stored.generation == generation || plan.touched.contains(&stored.id) {
                    continue;
                }
                if EventStatus::of(stored.status.as_deref()) == EventStatus::Cancelled {
                    plan.deletes.push(stored.id); // a hidden occurrence, reported when it was hidden
                    continue;
                }
                plan.deletes.push(stored.id.clone());
                plan.changes
                    .push(super::tombstone_record(&key, stored, now));
            }
            Ok(plan)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("sweep task failed: {e}")))?
    }

    async fn write(&self, plan: Plan, state: &CalendarState) -> Result<(), PassError> {
        let page = PageWrite {
            calendar: self.key.clone(),
            upserts: plan.upserts,
            deletes: plan.deletes,
            changes: plan.changes,
            state: state.clone(),
        };
        Ok(self.deps.feed.apply(page).await?)
    }

    fn succeeded(&self, state: &mut CalendarState) {
        state.last_sync_at = Some(Timestamp::now());
        state.last_error = None;
    }

    pub(super) fn set_state(&self, name: EngineState, progress: Option<Progress>) {
        self.deps.board.update(&self.key, |s: &mut LiveStatus| {
            s.state = name;
            s.progress = progress;
        });
    }

    fn set_progress(&self, progress: Progress) {
        self.deps
            .board
            .update(&self.key, |s| s.progress = Some(progress));
    }
}

//! The task that owns every channel: reconciles at startup and on the
//! `channels.check_schedule` cron (tokio-cron-scheduler; its jobs only send
//! a message, so checks never overlap), and reconciles anyway when the cron
//! has not fired for two periods (a missed renewal loses pings).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::{is_due, new_token, ChannelIndex, ChannelMsg, IndexEntry, Renewal};
use crate::accounts::{Calendars, Watched};
use crate::google::GoogleError;
use crate::metrics::Metrics;
use crate::store::{CalendarKey, ChannelId, ChannelRecord, ChannelState, Store, StoreError};
use crate::time::Timestamp;

/// Owns the channels of every configured calendar.
pub(crate) struct Scheduler {
    pub store: Store,
    pub index: ChannelIndex,
    /// The running calendars (and their Google clients).
    pub calendars: Calendars,
    /// `hook.public_url`, the address every channel delivers to.
    pub address: String,
    /// `channels.ttl` and `channels.renew_before`.
    pub renewal: Renewal,
    pub schedule: String,
    pub rx: mpsc::Receiver<ChannelMsg>,
    /// The `sync` messages the hook saw (see `ChannelsHandle::confirmed`).
    pub confirmations: mpsc::UnboundedReceiver<ChannelId>,
    pub tx: mpsc::Sender<ChannelMsg>,
    pub stop: CancellationToken,
    pub metrics: Metrics,
}

/// Why creating a channel failed.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Scheduler {
    pub(crate) async fn run(mut self) {
        if let Err(e) = self.load() {
            tracing::error!(error = %e, "cannot read channels from the store");
        }
        let mut cron = self.start_cron().await;
        let mut state = CheckTimes {
            last: Instant::now(),
            period: self.fallback_period(),
            last_cron: None,
        };
        let mut retry = self.reconcile_all().await;
        let mut fallback = tokio::time::interval(state.period);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut orphans_stopped = HashSet::new();
        let mut orphan_budget = OrphanBudget::default();
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = fallback.tick() => {
                    if state.last.elapsed() > state.period * 2 {
                        tracing::warn!(since = ?state.last.elapsed(), "channel check has not run for two periods; reconciling anyway");
                        retry = self.reconcile_all().await;
                        state.last = Instant::now();
                    }
                }
                _ = sleep_until(retry) => retry = self.reconcile_all().await,
                Some(id) = self.confirmations.recv() => self.confirm(&id),
                msg = self.rx.recv() => match msg {
                    None => break,
                    Some(ChannelMsg::Check) => {
                        state.observe_cron();
                        retry = self.reconcile_all().await;
                    }
                    Some(ChannelMsg::Removed) => self.stop_unconfigured().await,
                    Some(ChannelMsg::Orphan { id, resource_id }) => {
                        if orphans_stopped.len() < 10_000 && orphans_stopped.insert(id.clone()) {
                            self.stop_orphan(&id, &resource_id, &mut orphan_budget).await;
                        }
                    }
                },
            }
        }
        if let Some(c) = cron.as_mut() {
            let _ = c.shutdown().await;
        }
    }

    /// Until two cron ticks are seen, assume a quarter of `renew_before`
    /// (1 s to 5 min) between checks.
    fn fallback_period(&self) -> Duration {
        (self.renewal.renew_before / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }

    async fn start_cron(&self) -> Option<JobScheduler> {
        let tx = self.tx.clone();
        let job = Job::new_async(self.schedule.as_str(), move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A full queue means a check is pending already.
                let _ = tx.try_send(ChannelMsg::Check);
            })
        });
        let setup = async {
            let sched = JobScheduler::new().await?;
            sched.add(job?).await?;
            sched.start().await?;
            Ok::<_, tokio_cron_scheduler::JobSchedulerError>(sched)
        };
        match setup.await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the channel check schedule; relying on the fallback timer");
                None
            }
        }
    }

    /// Fills the index from the store. Pending channels (watch never
    /// answered before a crash) and expired ones are dropped.
    fn load(&mut self) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        for ch in self.store.channels()? {
            let dead = ch.state == ChannelState::Pending
                || ch.expiration_ms.is_some_and(|e| e <= now)
                || !self.calendars.contains(&Watched::of(&ch.calendar));
            if dead && ch.state != ChannelState::Stopping {
                self.store.remove_channel(&ch.id)?;
                continue;
            }
            self.index.insert(
                &ch.id,
                IndexEntry {
                    watched: Watched::of(&ch.calendar),
                    token: ch.token.clone(),
                    resource_id: ch.resource_id.clone(),
                },
            );
        }
        Ok(())
    }

    /// One pass over every calendar. The channels are read from the store
    /// once per pass and handed to each calendar's reconcile, so a check
    /// costs O(calendars + channels), not a scan of every channel per
    /// calendar.
    ///
    /// Returns when to try again: soon ([`RETRY_SOON`]) when a calendar
    /// failed (a watch refused by the quota or a 5xx), since every minute
    /// without a channel is a minute of pings lost; otherwise never, and
    /// the next check comes from the schedule.
    async fn reconcile_all(&mut self) -> Option<Instant> {
        let all = match self.store.channels() {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read channels from the store; retrying soon");
                return Some(Instant::now() + RETRY_SOON);
            }
        };
        let mut by_calendar = self.stop_unconfigured_of(all).await;
        let mut failed = 0usize;
        for watched in self.calendars.watched() {
            if self.stop.is_cancelled() {
                return None;
            }
            // Confirmations that came while earlier calendars were done.
            while let Ok(id) = self.confirmations.try_recv() {
                self.confirm(&id);
            }
            let mine = by_calendar.remove(&watched.key()).unwrap_or_default();
            if let Err(e) = self.reconcile(&watched, mine).await {
                failed += 1;
                let key = watched.key();
                tracing::warn!(account = %key.account, calendar = %key.calendar_id, error = %e, retry_in = ?RETRY_SOON, "channel reconcile failed; retrying soon");
            }
            if let Some(t) = self.calendars.trigger(&watched) {
                t.channel_settled();
            }
        }
        // A check reads every channel record: give that memory back.
        crate::memory::trim().await;
        (failed > 0).then(|| Instant::now() + RETRY_SOON)
    }

    /// Keeps one live channel on `watched`, whose channel records are
    /// `mine`: create when none is live (and sync, since pings were
    /// missed), replace when due, stop replaced ones.
    async fn reconcile(
        &mut self,
        watched: &Watched,
        mine: Vec<ChannelRecord>,
    ) -> Result<(), ChannelError> {
        let key = &watched.key();
        if self.store.poll_only(key)? {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        for old in mine.iter().filter(|c| c.state == ChannelState::Stopping) {
            self.stop_channel(old).await;
        }
        let live: Vec<&ChannelRecord> = mine
            .iter()
            .filter(|c| c.state == ChannelState::Active && c.expiration_ms.is_some_and(|e| e > now))
            .collect();
        if live.is_empty() {
            for expired in mine.iter().filter(|c| c.state == ChannelState::Active) {
                self.forget(&expired.id)?;
            }
            if self.create(watched).await? {
                // Changes made while no channel was live pinged nobody: a
                // pass must start after the channel exists. At start-up the
                // calendar's first pass usually has, and is enough.
                if let Some(t) = self.calendars.trigger(watched) {
                    t.poke_unless_started_since(Instant::now());
                }
            }
            return Ok(());
        }
        let renew = self.renewal;
        // A channel made for another hook.public_url delivers nowhere we
        // listen: replaced at once, as if it were due.
        let elsewhere = |c: &ChannelRecord| c.address.as_deref().is_some_and(|a| a != self.address);
        if live.iter().any(|c| elsewhere(c)) {
            tracing::info!(account = %key.account, calendar = %key.calendar_id, "hook.public_url changed since the channel was made; replacing it");
        }
        if live
            .iter()
            .all(|c| is_due(now, c.expiration_ms.unwrap_or(0), renew, &c.id) || elsewhere(c))
        {
            let old: Vec<ChannelRecord> = live.into_iter().cloned().collect();
            if self.create(watched).await? {
                self.metrics.channel_renewals.inc();
                for mut o in old {
                    o.state = ChannelState::Stopping;
                    self.store.put_channel(&o)?;
                    self.stop_channel(&o).await;
                }
            }
        }
        Ok(())
    }

    /// Creates a channel: persisted (and in the index) before events.watch
    /// is called, because the `sync` ping can beat the watch response.
    /// Returns false when the calendar turned out to be poll-only.
    async fn create(&mut self, watched: &Watched) -> Result<bool, ChannelError> {
        let key = &watched.key();
        let Some(client) = self.calendars.client(&key.account) else {
            return Ok(false);
        };
        let mut rec = ChannelRecord {
            id: ChannelId::random(),
            calendar: key.clone(),
            token: new_token(),
            resource_id: None,
            expiration_ms: None,
            state: ChannelState::Pending,
            confirmed: false,
            address: Some(self.address.clone()),
        };
        self.store.put_channel(&rec)?;
        self.store.flush().await?;
        self.index.insert(
            &rec.id,
            IndexEntry {
                watched: watched.clone(),
                token: rec.token.clone(),
                resource_id: None,
            },
        );
        let answer = match watched {
            Watched::CalendarList { .. } => {
                client
                    .calendar_list_watch(
                        &rec.id,
                        rec.token.expose(),
                        &self.address,
                        self.renewal.ttl,
                    )
                    .await
            }
            Watched::Events(_) => {
                client
                    .events_watch(
                        &key.calendar_id,
                        &rec.id,
                        rec.token.expose(),
                        &self.address,
                        self.renewal.ttl,
                    )
                    .await
            }
        };
        match answer {
            Ok(resp) => {
                rec.resource_id = Some(resp.resource_id.clone());
                rec.expiration_ms = resp.expiration_ms;
                rec.state = ChannelState::Active;
                // Unconfirmed: the sync ping is confirmed on this task, after this.
                self.store.put_channel(&rec)?;
                self.index.insert(
                    &rec.id,
                    IndexEntry {
                        watched: watched.clone(),
                        token: rec.token.clone(),
                        resource_id: Some(resp.resource_id),
                    },
                );
                let expires = resp.expiration_ms.and_then(Timestamp::from_millis);
                tracing::info!(account = %key.account, calendar = %key.calendar_id, channel = %rec.id, expires = ?expires.map(|t| t.to_string()), "channel created");
                Ok(true)
            }
            Err(GoogleError::PushNotSupported(_)) => {
                self.forget(&rec.id)?;
                self.store.set_poll_only(key, true)?;
                tracing::info!(account = %key.account, calendar = %key.calendar_id, "Google does not push for this calendar; polling it every sync.poll_interval");
                Ok(false)
            }
            Err(e) => {
                self.metrics.channel_failures.inc();
                self.forget(&rec.id)?;
                Err(e.into())
            }
        }
    }

    /// channels.stop; 404 counts as stopped. On failure the channel stays
    /// (state Stopping, still in the index) and is retried at the next check.
    async fn stop_channel(&mut self, ch: &ChannelRecord) {
        let (Some(client), Some(rid)) = (
            self.calendars.client(&ch.calendar.account),
            ch.resource_id.as_deref(),
        ) else {
            let _ = self.forget(&ch.id);
            return;
        };
        match client.channels_stop(&ch.id, rid).await {
            Ok(()) => {
                if let Err(e) = self.forget(&ch.id) {
                    tracing::warn!(channel = %ch.id, error = %e, "cannot remove a stopped channel from the store");
                }
                tracing::info!(account = %ch.calendar.account, calendar = %ch.calendar.calendar_id, channel = %ch.id, "channel stopped");
            }
            Err(e) => {
                self.metrics.channel_failures.inc();
                tracing::warn!(channel = %ch.id, error = %e, "channels.stop failed; retrying at the next check")
            }
        }
    }

    /// Stops the channels of calendars that are no longer configured.
    async fn stop_unconfigured(&mut self) {
        match self.store.channels() {
            Ok(all) => {
                self.stop_unconfigured_of(all).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read channels from the store"),
        }
    }

    /// Stops the channels among `all` whose calendars are no longer
    /// configured; returns the others by calendar.
    async fn stop_unconfigured_of(
        &mut self,
        all: Vec<ChannelRecord>,
    ) -> HashMap<CalendarKey, Vec<ChannelRecord>> {
        let mut by_calendar: HashMap<CalendarKey, Vec<ChannelRecord>> = HashMap::new();
        for ch in all {
            if self.calendars.contains(&Watched::of(&ch.calendar)) {
                by_calendar.entry(ch.calendar.clone()).or_default().push(ch);
            } else {
                self.stop_channel(&ch).await;
            }
        }
        by_calendar
    }

    fn forget(&self, id: &str) -> Result<(), StoreError> {
        self.index.remove(id);
        self.store.remove_channel(id)
    }

    /// Records that channel `id`'s `sync` message arrived: one lookup.
    fn confirm(&self, id: &str) {
        match self.store.channel(id) {
            Ok(Some(mut ch)) if !ch.confirmed => {
                ch.confirmed = true;
                if let Err(e) = self.store.put_channel(&ch) {
                    tracing::warn!(channel = %id, error = %e, "cannot record the sync message");
                }
            }
            // Confirmed already, or gone (replaced or stopped since).
            Ok(_) => {}
            Err(e) => tracing::warn!(channel = %id, error = %e, "cannot record the sync message"),
        }
    }

    /// Stops, once, a channel that pings us but that we no longer own.
    async fn stop_orphan(&self, id: &str, resource_id: &str, budget: &mut OrphanBudget) {
        let Some(account) = self.index.resource_owner(resource_id) else {
            return;
        };
        if !budget.take(&account, Instant::now()) {
            tracing::debug!(channel = %id, account = %account, "not stopping an unknown channel: this minute's budget is spent");
            return;
        }
        let Some(client) = self.calendars.client(&account) else {
            return;
        };
        match client.channels_stop(id, resource_id).await {
            Ok(()) => tracing::info!(channel = %id, "stopped an orphaned channel"),
            Err(e) => tracing::warn!(channel = %id, error = %e, "cannot stop an orphaned channel"),
        }
    }
}

/// How soon a check that failed for some calendar runs again.
const RETRY_SOON: Duration = Duration::from_secs(30);

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Stops of unknown channels allowed per account and minute. A genuine
/// orphan (a channel of ours from before a crash) keeps pinging, so it is
/// stopped sooner or later; a flood of forged pings costs a few calls.
const ORPHAN_STOPS_PER_MINUTE: u32 = 3;

/// Per-account count of orphan stops in the current minute.
#[derive(Default)]
struct OrphanBudget(HashMap<String, (Instant, u32)>);

impl OrphanBudget {
    fn take(&mut self, account: &str, now: Instant) -> bool {
        let (since, used) = self.0.entry(account.to_string()).or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(60) {
            (*since, *used) = (now, 0);
        }
        if *used >= ORPHAN_STOPS_PER_MINUTE {
            return false;
        }
        *used += 1;
        true
    }
}

/// When checks ran, to notice a cron that stopped firing.
struct CheckTimes {
    last: Instant,
    period: Duration,
    last_cron: Option<Instant>,
}

impl CheckTimes {
    fn observe_cron(&mut self) {
        let now = Instant::now();
        if let Some(prev) = self.last_cron {
            self.period = (now - prev).max(Duration::from_millis(500));
        }
        self.last_cron = Some(now);
        self.last = now;
    }
}

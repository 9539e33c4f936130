//! The accounts supervisor: the one task that changes which calendars run.
//! It applies each configuration the daemon hands it (on SIGHUP), follows
//! the calendar lists of accounts with `calendars = "all"` (re-read when
//! their channel pings, and on the poll interval), writes the final
//! `deleted` records of calendars that went away, and tells the channel
//! scheduler what changed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::accounts::{Applied, Starter, Watched};
use crate::channels::ChannelMsg;
use crate::config::{CalendarSelection, Config, OnCalendarRemoved};
use crate::store::CalendarKey;

/// A configuration to apply, and where to say it has been.
pub(crate) type Reload = (Arc<Config>, oneshot::Sender<()>);

pub(crate) struct Supervisor {
    pub starter: Starter,
    /// The channel scheduler's inbox.
    pub channels: mpsc::Sender<ChannelMsg>,
    /// The configuration running now.
    pub config: Arc<Config>,
    /// Accounts whose calendars could not be told at the last apply (see
    /// [`Applied::unsettled`]), and how many applies in a row left some:
    /// the next comes sooner than the poll interval (30 s doubling up to 5
    /// minutes).
    pub unsettled: Vec<String>,
    pub failed_reads: u32,
}

impl Supervisor {
    /// Runs until `stop` or until the daemon drops its end of `reloads`.
    pub(crate) async fn run(
        mut self,
        mut reloads: mpsc::Receiver<Reload>,
        stop: CancellationToken,
    ) {
        let list_trigger = self.starter.calendars.list_trigger();
        self.purge_leftovers().await;
        loop {
            let next_refresh = match (self.unsettled.is_empty(), self.failed_reads) {
                (true, _) => list_refresh(&self.config),
                (false, n) => Some(crate::sync::retry_delay(LIST_RETRY, n.max(1), None)),
            }
            .map(|d| tokio::time::Instant::now() + d);
            let timer = async {
                match next_refresh {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let applied = tokio::select! {
                _ = stop.cancelled() => return,
                msg = reloads.recv() => match msg {
                    Some((new, done)) => {
                        let old = std::mem::replace(&mut self.config, new);
                        let applied = self.apply(&old).await;
                        tracing::info!(config = %self.config.path.display(), accounts = self.config.accounts.len(), added = applied.added.len(), removed = applied.removed.len(), "configuration reloaded");
                        let _ = done.send(());
                        applied
                    }
                    None => return,
                },
                _ = list_trigger.notified() => self.refresh().await,
                _ = timer => self.refresh().await,
            };
            let settled_now = !self.unsettled.is_empty()
                && (self.unsettled.iter()).any(|a| !applied.unsettled.contains(a));
            self.failed_reads = if applied.unsettled.is_empty() {
                0
            } else {
                self.failed_reads + 1
            };
            self.unsettled = applied.unsettled;
            if settled_now {
                self.purge_leftovers().await;
            }
        }
    }

    /// A followed calendar list may have changed.
    async fn refresh(&self) -> Applied {
        let applied = self.apply(&self.config.clone()).await;
        if !applied.added.is_empty() || !applied.removed.is_empty() {
            tracing::info!(
                added = applied.added.len(),
                removed = applied.removed.len(),
                "calendar list changed"
            );
        }
        applied
    }

    /// Gives the calendars the store holds but nothing follows what a
    /// reload that removed them would have: those removed from the
    /// configuration while the daemon was stopped, and those whose final
    /// records a stop cut short. Accounts whose calendars cannot be told
    /// yet are left alone (a list that could not be read removes nothing).
    async fn purge_leftovers(&self) {
        let (store, _) = self.starter.store_and_feed();
        let stored = match store.calendars() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the stored calendars; calendars removed while the daemon was stopped keep their events");
                return;
            }
        };
        for (key, _) in stored {
            let followed = self
                .starter
                .calendars
                .contains(&Watched::Events(key.clone()));
            if followed || self.unsettled.contains(&key.account) {
                continue;
            }
            if store.events(&key).next().is_none() {
                continue; // purged, or kept empty
            }
            let policy = (self.config.accounts.iter())
                .find(|a| a.name == key.account)
                .map_or(OnCalendarRemoved::EmitDeletes, |a| a.on_calendar_removed);
            if policy == OnCalendarRemoved::EmitDeletes {
                tracing::info!(account = %key.account, calendar = %key.calendar_id, "a calendar no longer configured still has events (removed while the daemon was stopped, or its final records were cut short)");
                self.purge(&key).await;
            }
        }
    }

    /// Writes the final `deleted` records of a calendar that went away.
    async fn purge(&self, key: &CalendarKey) {
        let (store, feed) = self.starter.store_and_feed();
        match crate::sync::purge_calendar(store, feed, key).await {
            Ok(n) => {
                tracing::info!(account = %key.account, calendar = %key.calendar_id, records = n, "final deleted records written")
            }
            Err(e) => {
                tracing::error!(account = %key.account, calendar = %key.calendar_id, error = %e, "cannot write the final deleted records")
            }
        }
    }

    /// Makes the running calendars those of the current configuration and
    /// acts on the difference: removed calendars get their channels stopped
    /// and (unless `keep`) final deleted records; added ones get a channel
    /// (and so a full sync). `old` is the configuration replaced.
    async fn apply(&self, old: &Config) -> Applied {
        let applied = self.starter.apply(&self.config, Some(old)).await;
        for (key, policy) in &applied.removed {
            if *policy == OnCalendarRemoved::EmitDeletes {
                self.purge(key).await;
            }
        }
        // Waits for room rather than dropping: a new calendar's first full
        // sync waits for this check to make its channel. Fails only when
        // the scheduler has stopped, with the daemon.
        if !applied.removed.is_empty() {
            let _ = self.channels.send(ChannelMsg::Removed).await;
        }
        if !applied.added.is_empty() {
            let _ = self.channels.send(ChannelMsg::Check).await;
        }
        applied
    }
}

/// The first delay before a calendar list that could not be read is read
/// again.
const LIST_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Accounts with `calendars = "all"` have their calendar list read again
/// this often (jittered), so calendars that appear or disappear are
/// followed without a reload. None when no account follows its list.
fn list_refresh(cfg: &Config) -> Option<std::time::Duration> {
    cfg.accounts
        .iter()
        .any(|a| a.calendars == CalendarSelection::All)
        .then(|| crate::sync::jitter(cfg.sync.poll_interval, 0.25))
}

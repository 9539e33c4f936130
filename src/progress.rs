//! Start-up progress of many calendars: while calendars wait for their
//! first sync or their channel, one log line every [`EVERY`] (how many are
//! synced and watched, and when all should be), then one line when all
//! are. A daemon whose calendars are all ready at the first look says
//! nothing. Reads the engines' board and the channel index; owns nothing.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accounts::{Calendars, Watched};
use crate::channels::ChannelIndex;
use crate::store::Store;
use crate::sync::StatusBoard;

/// How often progress is logged.
const EVERY: Duration = Duration::from_secs(10);

/// What the progress task reads.
pub(crate) struct Sources {
    pub board: StatusBoard,
    pub index: ChannelIndex,
    pub calendars: Calendars,
    pub store: Store,
}

/// Logs until every calendar is ready, then waits for the daemon to stop
/// (a daemon task that ends counts as dead).
pub(crate) async fn run(sources: Sources, stop: CancellationToken) {
    log_until_ready(&sources, &stop).await;
    stop.cancelled().await;
}

async fn log_until_ready(sources: &Sources, stop: &CancellationToken) {
    let start = Instant::now();
    let mut logged = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let Counts {
            total,
            synced,
            watched,
        } = sources.count();
        let elapsed = start.elapsed();
        if synced >= total && watched >= total {
            if logged {
                tracing::info!(
                    calendars = total,
                    took_s = elapsed.as_secs(),
                    "start-up done: every calendar synced and watched (or poll-only)"
                );
            }
            // The start-up's transient memory (pages, answers, channel
            // checks) goes back now rather than after the next check.
            crate::memory::trim().await;
            return;
        }
        logged = true;
        // From the pace so far; none until something is done.
        let done = synced.min(watched).max(1) as f64;
        let left = total.saturating_sub(synced.min(watched)) as f64;
        let eta = Duration::from_secs_f64(elapsed.as_secs_f64() * left / done);
        tracing::info!(
            calendars = total,
            synced,
            watched,
            eta_s = eta.as_secs(),
            "start-up progress"
        );
    }
}

struct Counts {
    total: usize,
    synced: usize,
    /// With a live channel, or poll-only (Google does not push for it).
    watched: usize,
}

impl Sources {
    fn count(&self) -> Counts {
        let keys = self.calendars.keys();
        let with_channel: HashSet<_> = self
            .index
            .watched()
            .into_iter()
            .filter_map(|w| match w {
                Watched::Events(key) => Some(key),
                Watched::CalendarList { .. } => None,
            })
            .collect();
        let watched = keys
            .iter()
            .filter(|k| with_channel.contains(*k) || self.store.poll_only(k).unwrap_or(false))
            .count();
        Counts {
            total: keys.len(),
            synced: self.board.synced(&keys),
            watched,
        }
    }
}

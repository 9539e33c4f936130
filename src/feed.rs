//! The change feed's single writer. Engines hand it whole pages; it gives
//! each change record the next `seq`, writes the page in one store
//! transaction, makes it durable, and only then publishes the new head, which
//! wakes long-polling readers. One task owns the seq counter, so no lock.
//! The same task applies `feed.retention` between pages: records older than
//! it, and already passed by every enabled sink, are removed oldest first.
//!
//! A write that fails (a full disk, an I/O error) puts the writer in the
//! failing state, published through [`Feed::failure`]: every page is refused
//! until [`Store::reopen`] succeeds, retried with backoff. Records of a failed
//! page were never published, so no reader saw their seqs; after the reopen
//! the writer continues above whatever the store actually holds (and never
//! below the published head), so a seq a reader saw keeps its record.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{KindLabels, Metrics};
use crate::store::{ChangeKind, PageWrite, Seq, Store, StoreError};

/// What `feed.retention` keeps.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Records are kept at least this long after they were detected.
    pub keep: Duration,
    /// Configured sinks (kept current by the sinks' manager): records are
    /// also kept until each that is not disabled has passed them.
    pub sinks: watch::Receiver<Vec<String>>,
}

impl Retention {
    /// How often the writer looks for records to remove.
    fn every(&self) -> Duration {
        (self.keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}

/// Records removed per transaction; more are removed on the next turn.
const PRUNE_BATCH: usize = 5000;
/// First and longest wait between attempts to reopen a failing store.
const RECOVER_FIRST: Duration = Duration::from_secs(1);
const RECOVER_MAX: Duration = Duration::from_secs(30);
/// The durable-head marker trails the head by at most this much (plus one
/// fsync): one small write per interval, however many pages.
const MARK_EVERY: Duration = Duration::from_secs(1);

/// Sends pages to the writer and watches the head of the feed.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<(PageWrite, oneshot::Sender<Result<(), StoreError>>)>,
    head: watch::Receiver<Seq>,
    failure: watch::Receiver<Option<String>>,
}

impl Feed {
    /// Starts the writer task over `store`; it ends when every `Feed` clone
    /// is dropped or `stop` fires (after the page in hand).
    pub fn start(
        store: Store,
        retention: Retention,
        stop: CancellationToken,
        tasks: &crate::tasks::Tasks,
        metrics: Metrics,
    ) -> Result<Feed, StoreError> {
        let last = store.last_seq()?;
        let (head_tx, head) = watch::channel(last);
        let (failure_tx, failure) = watch::channel(None);
        let (tx, rx) = mpsc::channel(16);
        let writer = Writer {
            store,
            head: head_tx,
            failure: failure_tx,
            next: last.next(),
            marked: last,
            metrics,
        };
        let watched = stop.clone();
        tasks.spawn("feed writer", &watched, writer.run(rx, retention, stop));
        Ok(Feed { tx, head, failure })
    }

    /// Writes a page atomically; returns once it is durable. Change records
    /// get their `seq` here (whatever the caller put in it).
    pub async fn apply(&self, page: PageWrite) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((page, reply))
            .await
            .map_err(|_| StoreError::Backend("the feed writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the feed writer has stopped".into()))?
    }

    /// Replaces a calendar's state (no records): the feed writer is the
    /// one writer of calendar states, so a page in flight is never
    /// overwritten by an older copy.
    pub async fn put_state(
        &self,
        calendar: &crate::store::CalendarKey,
        state: crate::store::CalendarState,
    ) -> Result<(), StoreError> {
        self.apply(PageWrite {
            calendar: calendar.clone(),
            upserts: vec![],
            deletes: vec![],
            changes: vec![],
            state,
        })
        .await
    }

    /// The highest durable seq.
    pub fn head(&self) -> Seq {
        *self.head.borrow()
    }

    /// A receiver that changes whenever the head moves (for long-polls).
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.head.clone()
    }

    /// Why the store cannot be written right now; `None` when it can.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Returns once the store takes writes (at once when it does now).
    pub async fn writable(&self) {
        let mut failure = self.failure.clone();
        while failure.borrow_and_update().is_some() {
            if failure.changed().await.is_err() {
                return; // the writer stopped: the caller's next write says so
            }
        }
    }
}

type Request = (PageWrite, oneshot::Sender<Result<(), StoreError>>);

/// The writer task's state: the next seq is its alone.
struct Writer {
    store: Store,
    head: watch::Sender<Seq>,
    /// Set while writes fail; cleared by a successful reopen.
    failure: watch::Sender<Option<String>>,
    next: Seq,
    /// The head the durable-head marker holds.
    marked: Seq,
    metrics: Metrics,
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        retention: Retention,
        stop: CancellationToken,
    ) {
        let mut prune_at = tokio::time::Instant::now();
        // While failing: when to try the reopen next, and the wait after that.
        let mut recover_at: Option<(tokio::time::Instant, Duration)> = None;
        // When the marker is due to catch up with the head.
        let mut mark_at: Option<tokio::time::Instant> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        loop {
            if mark_at.is_none() && self.marked < *self.head.borrow() {
                mark_at = Some(tokio::time::Instant::now() + MARK_EVERY);
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.mark().await;
                    return;
                }
                _ = tokio::time::sleep_until(mark_at.unwrap_or_else(far)), if mark_at.is_some() => {
                    self.mark().await;
                    mark_at = None;
                }
                _ = tokio::time::sleep_until(recover_at.map_or_else(far, |(at, _)| at)), if recover_at.is_some() => {
                    let wait = recover_at.map_or(RECOVER_FIRST, |(_, wait)| wait);
                    recover_at = match self.recover().await {
                        Ok(()) => None,
                        Err(()) => Some((tokio::time::Instant::now() + wait, (wait * 2).min(RECOVER_MAX))),
                    };
                }
                msg = rx.recv() => match msg {
                    Some((page, reply)) => {
                        let failing = self.failure.borrow().clone();
                        let result = match failing {
                            Some(reason) => Err(StoreError::Failing(reason)),
                            None => self.page(page).await,
                        };
                        if result.is_err() && recover_at.is_none() && self.failure.borrow().is_some() {
                            recover_at = Some((tokio::time::Instant::now() + RECOVER_FIRST, RECOVER_FIRST * 2));
                        }
                        // The engine may have stopped waiting (shutdown); the page is durable either way.
                        let _ = reply.send(result);
                    }
                    None => {
                        self.mark().await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(prune_at), if recover_at.is_none() => {
                    let full_batch = self.prune(&retention).await;
                    prune_at = tokio::time::Instant::now()
                        + if full_batch { Duration::ZERO } else { retention.every() };
                }
            }
        }
    }

    async fn page(&mut self, mut page: PageWrite) -> Result<(), StoreError> {
        let first = self.next;
        for change in &mut page.changes {
            change.seq = self.next;
            self.next = self.next.next();
        }
        let kinds: Vec<ChangeKind> = page.changes.iter().map(|c| c.change).collect();
        let page_changes_last = page.changes.last().map(|c| c.seq);
        let result = write(&self.store, page).await;
        if let Err(e) = &result {
            // The page may sit in sled's memory, unflushed: its seqs are not
            // reused in this process (recover() starts above them), and no
            // reader saw them, since the head did not move.
            self.metrics.store_write_failures.inc();
            self.metrics.store_failing.set(1);
            tracing::error!(error = %e, first_seq = first.get(), "STORE WRITE FAILED: the feed is paused (nothing unwritten is served); reopening the store until it can be written again");
            self.failure.send_replace(Some(e.to_string()));
        } else if let Some(last) = page_changes_last {
            self.head.send_replace(last);
            self.metrics.feed_head.set(last.get() as i64);
            for kind in kinds {
                let kind = match kind {
                    ChangeKind::Created => "created",
                    ChangeKind::Updated => "updated",
                    ChangeKind::Deleted => "deleted",
                };
                self.metrics
                    .change_records
                    .get_or_create(&KindLabels { kind })
                    .inc();
            }
        }
        result
    }

    /// Brings the durable-head marker up to the published head (which is
    /// durable: it is published after the flush).
    async fn mark(&mut self) {
        let head = *self.head.borrow();
        if head <= self.marked {
            return;
        }
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.mark_durable(head))
            .await
            .map_err(|e| StoreError::Backend(format!("marker task failed: {e}")))
            .and_then(|r| r);
        match result {
            Ok(()) => self.marked = head,
            // Retried on the next turn; until then a rollback within the
            // gap would go unnoticed, nothing worse.
            Err(e) => tracing::warn!(error = %e, "cannot record the durable head"),
        }
    }

    /// Reopens the store after a failed write and continues the feed above
    /// whatever it holds. Err(()) (logged) while it still cannot.
    async fn recover(&mut self) -> Result<(), ()> {
        let store = self.store.clone();
        let published = *self.head.borrow();
        let reopened = tokio::task::spawn_blocking(move || {
            store.reopen()?;
            let last = store.last_seq()?;
            // A store behind what readers were shown went back in time.
            if last < published {
                return Err(StoreError::Backend(format!(
                    "after reopening, the store's last seq is {last}, behind seq {published} that readers were shown"
                )));
            }
            // Prove the store takes writes before the engines are let in.
            store.probe_write()?;
            Ok(last)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store reopen task failed: {e}")))
        .and_then(|r| r);
        match reopened {
            Ok(last) => {
                self.next = last.next();
                // Records the failed page did get to disk are durable now.
                self.head.send_replace(last);
                self.metrics.feed_head.set(last.get() as i64);
                self.metrics.store_failing.set(0);
                self.failure.send_replace(None);
                tracing::info!(
                    feed_head = last.get(),
                    "store writable again: the feed continues"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "store still cannot be written; retrying");
                self.failure.send_replace(Some(e.to_string()));
                Err(())
            }
        }
    }

    /// One retention turn; true when it removed a full batch (more may be due).
    async fn prune(&self, retention: &Retention) -> bool {
        // Checked: a retention longer than the clock can subtract keeps all.
        let Some(cutoff) = chrono::Duration::from_std(retention.keep)
            .ok()
            .and_then(|keep| chrono::Utc::now().checked_sub_signed(keep))
            .map(crate::time::Timestamp::from)
        else {
            return false;
        };
        let store = self.store.clone();
        let sinks = retention.sinks.borrow().clone();
        let result = tokio::task::spawn_blocking(move || {
            // A sink that never acknowledged anything holds every record; a
            // disabled one holds none (it resyncs when enabled again).
            let mut max_seq = Seq::MAX;
            for sink in &sinks {
                if store.sink_state(sink)?.disabled.is_none() {
                    max_seq = max_seq.min(store.cursor(sink)?.unwrap_or(Seq::ZERO));
                }
            }
            store.prune_changes(cutoff, max_seq, PRUNE_BATCH)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("prune task failed: {e}")))
        .and_then(|r| r);
        self.metrics.feed_prune_passes.inc();
        match result {
            Ok(0) => false,
            Ok(n) => {
                self.metrics.feed_pruned.inc_by(n as u64);
                let through = self.store.pruned_through().unwrap_or(Seq::ZERO).get();
                tracing::info!(removed = n, through_seq = through, retention = %humantime::format_duration(retention.keep), "feed retention removed old change records");
                n == PRUNE_BATCH
            }
            Err(e) => {
                tracing::error!(error = %e, "feed retention failed; no records were removed");
                false
            }
        }
    }
}

async fn write(store: &Store, page: PageWrite) -> Result<(), StoreError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.apply_page(page))
        .await
        .map_err(|e| StoreError::Backend(format!("store write task failed: {e}")))??;
    store.flush().await
}

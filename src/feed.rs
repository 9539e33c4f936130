//! The change feed's single writer. Engines hand it whole pages; it gives
//! each change record the next `seq`, writes the page in one store
//! transaction, makes it durable, and only then publishes the new head, which
//! wakes long-polling readers. One task owns the seq counter, so no lock.

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{KindLabels, Metrics};
use crate::store::{ChangeKind, PageWrite, Store, StoreError};

/// Sends pages to the writer and watches the head of the feed.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<(PageWrite, oneshot::Sender<Result<(), StoreError>>)>,
    head: watch::Receiver<u64>,
}

impl Feed {
    /// Starts the writer task over `store`; it ends when every `Feed` clone
    /// is dropped or `stop` fires (after the page in hand).
    pub fn start(
        store: Store,
        stop: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
        metrics: Metrics,
    ) -> Result<Feed, StoreError> {
        let last = store.last_seq()?;
        let (head_tx, head) = watch::channel(last);
        let (tx, rx) = mpsc::channel(16);
        tracker.spawn(write_loop(store, rx, head_tx, last + 1, stop, metrics));
        Ok(Feed { tx, head })
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

    /// The highest durable seq.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever the head moves (for long-polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}

async fn write_loop(
    store: Store,
    mut rx: mpsc::Receiver<(PageWrite, oneshot::Sender<Result<(), StoreError>>)>,
    head: watch::Sender<u64>,
    mut next: u64,
    stop: CancellationToken,
    metrics: Metrics,
) {
    loop {
        let (mut page, reply) = tokio::select! {
            _ = stop.cancelled() => return,
            msg = rx.recv() => match msg { Some(m) => m, None => return },
        };
        let first = next;
        for change in &mut page.changes {
            change.seq = next;
            next += 1;
        }
        let kinds: Vec<ChangeKind> = page.changes.iter().map(|c| c.change).collect();
        let result = write(&store, page).await;
        if result.is_err() {
            next = first; // nothing was written; the seqs are free again
        } else if next != first {
            head.send_replace(next - 1);
            metrics.feed_head.set((next - 1) as i64);
            for kind in kinds {
                let kind = match kind {
                    ChangeKind::Created => "created",
                    ChangeKind::Updated => "updated",
                    ChangeKind::Deleted => "deleted",
                };
                metrics
                    .change_records
                    .get_or_create(&KindLabels { kind })
                    .inc();
            }
        }
        // The engine may have stopped waiting (shutdown); the page is durable either way.
        let _ = reply.send(result);
    }
}

async fn write(store: &Store, page: PageWrite) -> Result<(), StoreError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.apply_page(page))
        .await
        .map_err(|e| StoreError::Backend(format!("store write task failed: {e}")))??;
    store.flush().await
}

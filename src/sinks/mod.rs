//! Push delivery of the feed to `[[sinks]]`. One task per sink owns its
//! cursor: it reads the records after it, delivers them as one batch,
//! and moves the cursor (durably, in the store) only once the receiver
//! acknowledged; until then it retries the same batch with backoff, so a
//! sink sees every record at least once and in order. A slow or dead sink
//! holds only its own task: syncing and other sinks go on, and feed
//! retention keeps what it has not acknowledged.
//!
//! Targets: webhooks, signed as Standard Webhooks (`webhook.rs`,
//! `sign.rs`), and commands fed the batch on stdin (`command.rs`).

mod board;
mod command;
mod sign;
mod webhook;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Sink, SinkTarget};
use crate::feed::Feed;
use crate::store::{ChangeRecord, FeedRead, Seq, Store};

pub(crate) use board::{SinkBoard, SinkStatus};
pub(crate) use sign::Signer;

/// First and longest wait between attempts of one batch.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Why a batch was not acknowledged.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The receiver answered 410 Gone: it wants no more.
    Gone,
    /// Anything else: retried.
    Failed(String),
}

/// Names a batch by the store and its seq range: the same across retries
/// (and restarts), so a receiver can recognise a batch it already applied.
fn batch_id(store_id: &str, first: Seq, last: Seq) -> String {
    format!("msg_{store_id}_{first}_{last}")
}

/// Where a sink's batches go.
enum Target {
    Webhook(Box<webhook::Webhook>),
    Command(command::Command),
}

impl Target {
    async fn send(&self, batch: &[ChangeRecord]) -> Result<(), Refused> {
        match self {
            Target::Webhook(w) => w.send(batch).await,
            Target::Command(c) => c.send(batch).await,
        }
    }
}

/// Starts a delivery task for every sink this version delivers to; their
/// state is on the returned board.
pub(crate) fn start(
    sinks: &[Sink],
    store: &Store,
    feed: &Feed,
    tasks: &crate::tasks::Tasks,
    (metrics, stop): (&crate::metrics::Metrics, &CancellationToken),
) -> SinkBoard {
    let board = SinkBoard::default();
    for sink in sinks {
        let cursor = match store.cursor(&sink.name) {
            Ok(c) => c.unwrap_or(Seq::ZERO),
            Err(e) => {
                tracing::error!(sink = %sink.name, error = %e, "cannot read the sink's cursor; not delivering");
                continue;
            }
        };
        board.put(SinkStatus {
            name: sink.name.clone(),
            kind: match sink.target {
                SinkTarget::Webhook(_) => "webhook",
                SinkTarget::Command(_) => "command",
            },
            cursor,
            state: "not_delivered",
            last_success: None,
            last_error: None,
        });
        let deliver = match &sink.target {
            SinkTarget::Webhook(url) => {
                let Some(secret) = &sink.secret else { continue };
                match Signer::new(secret.expose()) {
                    Ok(signer) => Target::Webhook(Box::new(webhook::Webhook::new(
                        url.clone(),
                        signer,
                        store.id(),
                        sink.timeout,
                    ))),
                    Err(e) => {
                        // The configuration check refuses this; never here.
                        tracing::error!(sink = %sink.name, error = %e, "sink not started");
                        continue;
                    }
                }
            }
            SinkTarget::Command(argv) => Target::Command(command::Command::new(
                &sink.name,
                argv.clone(),
                store.id(),
                sink.timeout,
            )),
        };
        board.update(&sink.name, |s| s.state = "delivering");
        let task = run(
            (sink.clone(), cursor),
            store.clone(),
            feed.clone(),
            deliver,
            Around {
                board: board.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
            },
        );
        tasks.spawn(format!("sink {}", sink.name), stop, task);
    }
    board
}

/// Delivers the feed after `cursor` to one sink until the daemon stops or
/// the receiver says 410 Gone.
async fn run(
    (sink, mut cursor): (Sink, Seq),
    store: Store,
    feed: Feed,
    deliver: Target,
    around: Around,
) {
    let (board, stop) = (&around.board, &around.stop);
    let name = sink.name.as_str();
    tracing::info!(sink = %name, cursor = cursor.get(), "sink delivering");
    let mut heads = feed.subscribe();
    loop {
        let head = *heads.borrow_and_update();
        if head <= cursor {
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            continue;
        }
        let (batch, through) = match store.read_feed(cursor, head, sink.batch_max, &sink.filter) {
            Ok(FeedRead::Records(batch, through)) => (batch, through),
            // Only a sink added after retention removed records gets here
            // (a configured sink holds the records it has not passed).
            Ok(FeedRead::Gone(pruned)) => {
                tracing::warn!(sink = %name, cursor = cursor.get(), pruned_through = pruned.get(), "the sink starts after records feed.retention already removed");
                (Vec::new(), pruned)
            }
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "cannot read the feed for the sink; retrying");
                if sleep_or_stop(RETRY_FIRST, stop).await {
                    return;
                }
                continue;
            }
        };
        // Records the sink's filters leave out move its cursor too.
        if !batch.is_empty()
            && deliver_until_acknowledged(name, &deliver, &batch, &around).await
                != Outcome::Acknowledged
        {
            return;
        }
        cursor = through;
        if let Err(e) = store.set_cursor(name, cursor) {
            // Delivered again after a restart, never lost.
            tracing::warn!(sink = %name, error = %e, "cannot store the sink's cursor");
        }
        board.update(name, |s| s.cursor = cursor);
    }
}

/// How the delivery of one batch ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// The receiver answered 410 Gone: the sink is disabled.
    Disabled,
    /// The daemon stops.
    Stopped,
}

/// Retries `batch` with backoff until the receiver acknowledges it, says
/// 410 Gone, or the daemon stops.
async fn deliver_until_acknowledged(
    name: &str,
    deliver: &Target,
    batch: &[ChangeRecord],
    around: &Around,
) -> Outcome {
    let (board, stop) = (&around.board, &around.stop);
    let count = |result: &'static str| {
        let labels = crate::metrics::DeliveryLabels {
            sink: name.to_string(),
            result,
        };
        around.metrics.sink_deliveries.get_or_create(&labels).inc();
    };
    let mut delay = RETRY_FIRST;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = tokio::select! {
            r = deliver.send(batch) => r,
            _ = stop.cancelled() => return Outcome::Stopped,
        };
        match result {
            Ok(()) => {
                count("ok");
                board.update(name, |s| {
                    s.state = "delivering";
                    s.last_success = Some(crate::time::Timestamp::now());
                    s.last_error = None;
                });
                if attempt > 1 {
                    tracing::info!(sink = %name, attempts = attempt, "sink accepts deliveries again");
                }
                return Outcome::Acknowledged;
            }
            Err(Refused::Gone) => {
                count("gone");
                board.update(name, |s| {
                    s.state = "disabled";
                    s.last_error = Some("the receiver answered 410 Gone".into());
                });
                tracing::error!(sink = %name, first_seq = batch[0].seq.get(), "SINK DISABLED: the receiver answered 410 Gone; it gets nothing more until the daemon restarts");
                return Outcome::Disabled;
            }
            Err(Refused::Failed(why)) => {
                count("failed");
                board.update(name, |s| {
                    s.state = "retrying";
                    s.last_error = Some(why.clone());
                });
                let wait = crate::sync::jitter(delay, 0.2);
                tracing::warn!(sink = %name, error = %why, attempt, retry_in = ?wait, first_seq = batch[0].seq.get(), "sink delivery failed; retrying");
                if sleep_or_stop(wait, stop).await {
                    return Outcome::Stopped;
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// What a sink's task reports to and stops by.
struct Around {
    board: SinkBoard,
    metrics: crate::metrics::Metrics,
    stop: CancellationToken,
}

/// Sleeps `d`; true when the daemon stops first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}

//! One sink's delivery task: reads the records after its cursor, delivers
//! them as one batch until acknowledged, moves the cursor, and repeats; it
//! ends when the daemon (or the manager) stops it, or when the sink is
//! disabled: its receiver answered 410 Gone, or its oldest undelivered
//! record is older than `max_lag`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Refused, SinkBoard, Target};
use crate::config::Sink;
use crate::feed::Feed;
use crate::store::{ChangeRecord, FeedRead, Seq, SinkDisabled, Store};
use crate::time::Timestamp;

/// First and longest wait between attempts of one batch.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// What a sink's task reports to and stops by.
pub(super) struct Around {
    pub(super) board: SinkBoard,
    pub(super) metrics: crate::metrics::Metrics,
    pub(super) stop: CancellationToken,
    /// When the sink was last enabled again (see `SinkState`).
    pub(super) enabled_at: Option<Timestamp>,
}

/// Delivers the feed after `cursor` to one sink until it is stopped or
/// disabled.
pub(super) async fn run(
    (sink, mut cursor): (Sink, Seq),
    (store, feed): (Store, Feed),
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
            board.update(name, |s| s.pending_since = None);
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            continue;
        }
        let (batch, through) = match store.read_feed(cursor, head, sink.batch_max, &sink.filter) {
            Ok(FeedRead::Records(batch, through)) => (batch, through),
            // A sink that was disabled, or added after retention removed
            // records: what was removed cannot be delivered.
            Ok(FeedRead::Gone(pruned)) => {
                tracing::error!(sink = %name, cursor = cursor.get(), pruned_through = pruned.get(), "SINK GAP: feed retention removed records the sink never got; it goes on after them, and its receiver must resync (GET /v1/snapshot)");
                board.update(name, |s| {
                    s.last_error = Some(format!(
                        "records {} to {} were removed by retention before delivery",
                        cursor.next(),
                        pruned
                    ));
                });
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
        if let Some(first) = batch.first() {
            board.update(name, |s| s.pending_since = Some(first.detected_at));
            match deliver_until_acknowledged(&sink, &deliver, &batch, &around).await {
                Outcome::Acknowledged => {}
                Outcome::Stopped => return,
                Outcome::Disabled(why) => {
                    disable(name, &store, board, why);
                    return;
                }
            }
        }
        store.failpoint("abort_after_sink_ack");
        cursor = through;
        // Durable before the next batch goes out, so a crash repeats at
        // most the batch in flight.
        let stored = match store.set_cursor(name, cursor) {
            Ok(()) => store.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            // Delivered again after a restart, never lost.
            tracing::warn!(sink = %name, error = %e, "cannot store the sink's cursor");
        }
        board.update(name, |s| s.cursor = cursor);
    }
}

/// Marks the sink disabled, durably, and says so loudly.
fn disable(name: &str, store: &Store, board: &SinkBoard, reason: String) {
    tracing::error!(sink = %name, reason = %reason, "SINK DISABLED: it gets nothing more, and holds no records from feed retention, until `gcal-syncd sinks reset {name}` (or it is edited out and back in with reloads)");
    let mark = SinkDisabled {
        since: Timestamp::now(),
        reason: reason.clone(),
    };
    if let Err(e) = store.disable_sink(name, mark) {
        // Disabled until the restart; then it is tried again.
        tracing::error!(sink = %name, error = %e, "cannot store that the sink is disabled");
    }
    board.update(name, |s| {
        s.state = "disabled";
        s.last_error = Some(reason);
    });
}

/// How the delivery of one batch ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// The sink is to be disabled, for this reason.
    Disabled(String),
    /// The daemon stops.
    Stopped,
}

/// Why the sink is past its `max_lag`, if it is: the oldest record of
/// `batch` (or the sink's last enabling, if later) is older.
fn past_max_lag(
    sink: &Sink,
    enabled_at: Option<Timestamp>,
    batch: &[ChangeRecord],
) -> Option<String> {
    let first = batch.first()?;
    let since = enabled_at.map_or(first.detected_at, |e| e.max(first.detected_at));
    let age = chrono::Utc::now().signed_duration_since(since.as_datetime());
    let max = chrono::Duration::from_std(sink.max_lag).ok()?;
    (age > max).then(|| {
        format!(
            "its oldest undelivered record (seq {}) is older than max_lag {}",
            first.seq,
            humantime::format_duration(sink.max_lag)
        )
    })
}

/// Retries `batch` with backoff until the receiver acknowledges it, the
/// sink is to be disabled, or the daemon stops.
async fn deliver_until_acknowledged(
    sink: &Sink,
    deliver: &Target,
    batch: &[ChangeRecord],
    around: &Around,
) -> Outcome {
    let name = sink.name.as_str();
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
        if let Some(why) = past_max_lag(sink, around.enabled_at, batch) {
            return Outcome::Disabled(why);
        }
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
                    s.last_success = Some(Timestamp::now());
                    s.last_error = None;
                });
                if attempt > 1 {
                    tracing::info!(sink = %name, attempts = attempt, "sink accepts deliveries again");
                }
                return Outcome::Acknowledged;
            }
            Err(Refused::Gone) => {
                count("gone");
                return Outcome::Disabled("the receiver answered 410 Gone".into());
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

/// Sleeps `d`; true when the daemon stops first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}

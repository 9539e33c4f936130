//! Push delivery of the feed to `[[sinks]]`. One task per sink owns its
//! cursor (`deliver.rs`): it reads the records after it, delivers them as
//! one batch, and moves the cursor (durably, in the store) only once the
//! receiver acknowledged; until then it retries the same batch with
//! backoff, so a sink sees every record at least once and in order. A slow
//! or dead sink holds only its own task: syncing and other sinks go on, and
//! feed retention keeps what it has not acknowledged while it is enabled.
//!
//! `manager.rs` owns the set of delivery tasks: it starts them, applies a
//! reload's sinks, and re-enables a disabled sink on `sinks reset`. A sink
//! is disabled (durably, in the store) when its receiver answers 410 Gone
//! or its lag passes `max_lag`; a disabled sink holds no records.
//!
//! Targets: webhooks, signed as Standard Webhooks (`webhook.rs`,
//! `sign.rs`), commands fed the batch on stdin (`command.rs`), and NATS
//! JetStream streams, one message per record (`nats.rs`).

mod board;
mod command;
mod deliver;
mod manager;
mod nats;
mod sign;
mod webhook;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Sink, SinkTarget};
use crate::feed::Feed;
use crate::store::{ChangeRecord, Seq, Store};

pub(crate) use board::{SinkBoard, SinkStatus};
pub(crate) use sign::Signer;

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

/// A batch as webhooks and commands get it: `{"changes": [...]}`, each
/// body written as stored (`json!` would parse every body into a `Value`
/// tree and write it out again, half the cost of a delivery).
fn batch_body(batch: &[ChangeRecord]) -> Result<Vec<u8>, Refused> {
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        changes: &'a [ChangeRecord],
    }
    serde_json::to_vec(&Batch { changes: batch })
        .map_err(|e| Refused::Failed(format!("cannot encode the batch: {e}")))
}

/// Where a sink's batches go.
enum Target {
    Webhook(Box<webhook::Webhook>),
    Command(command::Command),
    Nats(Box<nats::Nats>),
}

impl Target {
    fn new(sink: &Sink, store: &Store) -> Result<Target, String> {
        Ok(match &sink.target {
            SinkTarget::Webhook(url) => {
                // The configuration check requires a valid secret.
                let secret = sink
                    .secret
                    .as_ref()
                    .ok_or("a webhook sink without a secret")?;
                let signer = Signer::new(secret.expose())?;
                Target::Webhook(Box::new(webhook::Webhook::new(
                    url.clone(),
                    signer,
                    store.id(),
                    sink.timeout,
                )))
            }
            SinkTarget::Command(argv) => Target::Command(command::Command::new(
                &sink.name,
                argv.clone(),
                store.id(),
                sink.timeout,
            )),
            SinkTarget::Nats(target) => Target::Nats(Box::new(nats::Nats::new(
                target,
                sink.secret.clone(),
                store.id(),
                sink.timeout,
            ))),
        })
    }

    fn kind(target: &SinkTarget) -> &'static str {
        match target {
            SinkTarget::Webhook(_) => "webhook",
            SinkTarget::Command(_) => "command",
            SinkTarget::Nats(_) => "nats",
        }
    }

    async fn send(&self, batch: &[ChangeRecord]) -> Result<(), Refused> {
        match self {
            Target::Webhook(w) => w.send(batch).await,
            Target::Command(c) => c.send(batch).await,
            Target::Nats(n) => n.send(batch).await,
        }
    }
}

/// What a reset did.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ResetDone {
    pub(crate) name: String,
    /// It was disabled (or its task had failed) and delivers again.
    pub(crate) restarted: bool,
}

/// Why a reset did nothing.
#[derive(Debug)]
pub(crate) enum ResetError {
    /// No sink of that name is configured.
    Unknown(String),
    /// The store could not be changed, or the daemon is stopping.
    Failed(String),
}

impl std::fmt::Display for ResetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResetError::Unknown(name) => write!(f, "no sink named {name:?} is configured"),
            ResetError::Failed(why) => f.write_str(why),
        }
    }
}

/// Talks to the sinks' manager and shows their state.
#[derive(Clone)]
pub(crate) struct Sinks {
    pub(crate) board: SinkBoard,
    tx: mpsc::Sender<manager::Msg>,
}

impl Sinks {
    /// Re-enables a disabled sink (and restarts a failed one). Err: no such
    /// sink, or the daemon is stopping.
    pub(crate) async fn reset(&self, name: &str) -> Result<ResetDone, ResetError> {
        let stopping = || ResetError::Failed("the daemon is stopping".into());
        let (reply, done) = oneshot::channel();
        self.tx
            .send(manager::Msg::Reset(name.to_string(), reply))
            .await
            .map_err(|_| stopping())?;
        done.await.map_err(|_| stopping())?
    }

    /// Applies a reloaded configuration's sinks; returns once they run.
    pub(crate) async fn reload(&self, sinks: Vec<Sink>) {
        let (reply, done) = oneshot::channel();
        if self
            .tx
            .send(manager::Msg::Reload(sinks, reply))
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }
}

/// Starts the sinks' manager, which starts a delivery task for every
/// enabled sink. `configured` tells feed retention which sinks' cursors
/// hold records.
pub(crate) fn start(
    sinks: &[Sink],
    (store, feed): (&Store, &Feed),
    configured: watch::Sender<Vec<String>>,
    tasks: &crate::tasks::Tasks,
    (metrics, stop): (&crate::metrics::Metrics, &CancellationToken),
) -> Sinks {
    let board = SinkBoard::default();
    let (tx, rx) = mpsc::channel(8);
    let manager = manager::Manager::new(
        store.clone(),
        feed.clone(),
        board.clone(),
        metrics.clone(),
        configured,
    );
    tasks.spawn(
        "sinks manager",
        stop,
        manager.run(sinks.to_vec(), rx, stop.clone()),
    );
    Sinks { board, tx }
}

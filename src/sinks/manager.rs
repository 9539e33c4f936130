//! The one task that owns the sinks' delivery tasks: which run, with what
//! configuration. Others talk to it by message ([`super::Sinks`]).
//!
//! - At start and on reload it starts a task for each configured sink that
//!   is not disabled in the store; a sink removed by a reload is stopped
//!   and its disabled mark cleared, so editing a sink out and back in (two
//!   reloads) re-enables it; a changed sink is restarted from its cursor.
//! - `Reset` clears a sink's disabled mark and starts it again.
//! - It publishes the configured sinks' names for feed retention, which
//!   keeps records until every one of them that is enabled passed them.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{deliver, ResetDone, ResetError, SinkBoard, SinkStatus, Target};
use crate::config::Sink;
use crate::feed::Feed;
use crate::store::{Seq, Store};

pub(super) enum Msg {
    Reset(String, oneshot::Sender<Result<ResetDone, ResetError>>),
    Reload(Vec<Sink>, oneshot::Sender<()>),
}

/// A sink's delivery task.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub(super) struct Manager {
    store: Store,
    feed: Feed,
    board: SinkBoard,
    metrics: crate::metrics::Metrics,
    configured: watch::Sender<Vec<String>>,
    /// Every configured sink, running or not (disabled, failed).
    sinks: Vec<Sink>,
    running: HashMap<String, Running>,
}

impl Manager {
    pub(super) fn new(
        store: Store,
        feed: Feed,
        board: SinkBoard,
        metrics: crate::metrics::Metrics,
        configured: watch::Sender<Vec<String>>,
    ) -> Manager {
        Manager {
            store,
            feed,
            board,
            metrics,
            configured,
            sinks: Vec::new(),
            running: HashMap::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        sinks: Vec<Sink>,
        mut rx: mpsc::Receiver<Msg>,
        stop: CancellationToken,
    ) {
        self.apply(sinks, &stop).await;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = stop.cancelled() => None,
            };
            match msg {
                Some(Msg::Reset(name, reply)) => {
                    let _ = reply.send(self.reset(&name, &stop).await);
                }
                Some(Msg::Reload(sinks, reply)) => {
                    self.apply(sinks, &stop).await;
                    let _ = reply.send(());
                }
                None => break,
            }
        }
        for (_, r) in self.running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    /// Makes the running sinks those of `sinks`.
    async fn apply(&mut self, sinks: Vec<Sink>, stop: &CancellationToken) {
        let old = std::mem::take(&mut self.sinks);
        for gone in old
            .iter()
            .filter(|o| !sinks.iter().any(|s| s.name == o.name))
        {
            self.halt(&gone.name).await;
            self.board.remove(&gone.name);
            match self.store.enable_sink(&gone.name) {
                Ok(true) => {
                    tracing::info!(sink = %gone.name, "sink removed from the configuration; its disabled mark is cleared")
                }
                Ok(false) => {
                    tracing::info!(sink = %gone.name, "sink removed from the configuration")
                }
                Err(e) => {
                    tracing::warn!(sink = %gone.name, error = %e, "cannot clear the removed sink's disabled mark")
                }
            }
        }
        for sink in &sinks {
            // Unchanged: it was launched before and keeps its state
            // (delivering, disabled or failed).
            if old.iter().any(|o| o == sink) {
                continue;
            }
            if old.iter().any(|o| o.name == sink.name) {
                tracing::info!(sink = %sink.name, "sink changed in the configuration; restarting it");
            }
            self.halt(&sink.name).await;
            self.launch(sink, stop);
        }
        self.configured
            .send_replace(sinks.iter().map(|s| s.name.clone()).collect());
        self.sinks = sinks;
    }

    /// Stops the sink's task, if one runs, and waits for it.
    async fn halt(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    /// Starts the sink's delivery task, unless the store says it is
    /// disabled; either way its entry on the board says so.
    fn launch(&mut self, sink: &Sink, stop: &CancellationToken) {
        let mut status = SinkStatus {
            name: sink.name.clone(),
            kind: Target::kind(&sink.target),
            cursor: Seq::ZERO,
            state: "delivering",
            pending_since: None,
            last_success: None,
            last_error: None,
        };
        let ready = (|| {
            status.cursor = self
                .store
                .cursor(&sink.name)
                .map_err(|e| ("failed", format!("cannot read the sink's cursor: {e}")))?
                .unwrap_or(Seq::ZERO);
            let state = self
                .store
                .sink_state(&sink.name)
                .map_err(|e| ("failed", format!("cannot read the sink's state: {e}")))?;
            if let Some(off) = state.disabled {
                tracing::warn!(sink = %sink.name, since = %off.since, reason = %off.reason, "sink is disabled; `gcal-syncd sinks reset {}` enables it again", sink.name);
                return Err(("disabled", off.reason));
            }
            let target = Target::new(sink, &self.store).map_err(|e| ("failed", e))?;
            Ok((target, state.enabled_at))
        })();
        let (target, enabled_at) = match ready {
            Ok(target) => target,
            Err((state, why)) => {
                if state == "failed" {
                    tracing::error!(sink = %sink.name, error = %why, "sink not started");
                }
                status.state = state;
                status.last_error = Some(why);
                self.board.put(status);
                return;
            }
        };
        let cursor = status.cursor;
        self.board.put(status);
        let task_stop = stop.child_token();
        let task = deliver::run(
            (sink.clone(), cursor),
            (self.store.clone(), self.feed.clone()),
            target,
            deliver::Around {
                board: self.board.clone(),
                metrics: self.metrics.clone(),
                stop: task_stop.clone(),
                enabled_at,
            },
        );
        let (name, board) = (sink.name.clone(), self.board.clone());
        let inner = tokio::spawn(task);
        // A panic fails this sink only: said on the board and in the log,
        // and `sinks reset` starts it again.
        let task = tokio::spawn(async move {
            if let Err(e) = inner.await {
                if e.is_panic() {
                    tracing::error!(sink = %name, "the sink's delivery task panicked; `gcal-syncd sinks reset {name}` restarts it");
                    board.update(&name, |s| {
                        s.state = "failed";
                        s.last_error = Some("the delivery task panicked".into());
                    });
                }
            }
        });
        self.running.insert(
            sink.name.clone(),
            Running {
                stop: task_stop,
                task,
            },
        );
    }

    async fn reset(
        &mut self,
        name: &str,
        stop: &CancellationToken,
    ) -> Result<ResetDone, ResetError> {
        let Some(sink) = self.sinks.iter().find(|s| s.name == name).cloned() else {
            return Err(ResetError::Unknown(name.to_string()));
        };
        let was_marked = self.store.enable_sink(name).map_err(|e| {
            ResetError::Failed(format!("cannot clear the sink's disabled mark: {e}"))
        })?;
        let alive = self
            .running
            .get(name)
            .is_some_and(|r| !r.task.is_finished());
        if alive && !was_marked {
            return Ok(ResetDone {
                name: name.to_string(),
                restarted: false,
            });
        }
        self.halt(name).await;
        self.launch(&sink, stop);
        tracing::info!(sink = %name, "sink reset: delivering again from its cursor");
        Ok(ResetDone {
            name: name.to_string(),
            restarted: true,
        })
    }
}

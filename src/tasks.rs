//! The daemon's long-lived tasks, none of which may die unnoticed.
//!
//! [`Tasks::spawn`] runs a task on the daemon's tracker and watches it: a
//! panic, or an end before its stop token fired, is logged and reported on
//! [`Deaths`], which the daemon turns into a stop with a clear error and
//! exit code 1, so systemd restarts it. Without this a panicking engine or
//! feed writer would be gone while `/healthz` still answered 200.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns watched tasks. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    died: mpsc::UnboundedSender<String>,
}

/// The names of tasks that died, in order.
pub struct Deaths(mpsc::UnboundedReceiver<String>);

impl Deaths {
    /// The next task that died (pending forever while none has).
    pub async fn next(&mut self) -> String {
        match self.0.recv().await {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}

impl Tasks {
    pub fn new(tracker: TaskTracker) -> (Tasks, Deaths) {
        let (died, deaths) = mpsc::unbounded_channel();
        (Tasks { tracker, died }, Deaths(deaths))
    }

    /// The tracker the daemon drains at stop.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Runs `task`, which should end only once `stop` fired. The handle
    /// resolves when the task has ended.
    pub fn spawn<F>(
        &self,
        name: impl Into<String>,
        stop: &CancellationToken,
        task: F,
    ) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let stop = stop.clone();
        let died = self.died.clone();
        // One task per spawn (an engine per calendar is one): the panic is
        // caught inside it rather than seen through a second, watching
        // task. A combinator, not an async block: a block would hold the
        // task's future twice (captured, then awaited).
        let watched = AssertUnwindSafe(task).catch_unwind().map(move |outcome| {
            let why = match outcome {
                Err(_) => Some("panicked"),
                Ok(()) if !stop.is_cancelled() => Some("ended"),
                Ok(()) => None,
            };
            if let Some(why) = why {
                tracing::error!(task = %name, why, "a task of the daemon stopped unexpectedly; stopping the daemon");
                let _ = died.send(name);
            }
        });
        self.tracker.spawn(watched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_or_an_early_end_is_reported_and_a_stop_is_not() {
        let (tasks, mut deaths) = Tasks::new(TaskTracker::new());
        let stop = CancellationToken::new();
        let _ = tasks.spawn("panics", &stop, async { panic!("boom") }).await;
        assert_eq!(deaths.next().await, "panics");
        let _ = tasks.spawn("returns", &stop, async {}).await;
        assert_eq!(deaths.next().await, "returns");
        let s = stop.clone();
        let handle = tasks.spawn("stops", &stop, async move { s.cancelled().await });
        stop.cancel();
        let _ = handle.await;
        assert!(deaths.0.try_recv().is_err(), "a clean stop was reported");
    }
}

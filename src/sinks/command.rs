//! One command delivery: the program runs without a shell, in a process
//! group of its own, with `{"changes": [...]}` on stdin. Exit status 0
//! acknowledges the batch; its stdout and stderr lines go to the log under
//! the sink's name. After `timeout` the whole group is killed (a script's
//! children too, so nothing keeps its pipes open) and the batch is retried.
//! `GCAL_SYNCD_BATCH_ID` carries the same id as a webhook's `webhook-id`,
//! stable across retries, so the program can recognise a batch it applied.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command as Process;

use super::Refused;
use crate::store::ChangeRecord;

/// Lines of output logged per run; the rest are counted.
const MAX_LINES: usize = 200;
/// Characters logged per line.
const MAX_LINE: usize = 2000;
/// How long the output is still read after the program exited (a child it
/// left behind may hold the pipes).
const DRAIN: Duration = Duration::from_secs(1);

pub(super) struct Command {
    sink: String,
    argv: Vec<String>,
    store_id: String,
    timeout: Duration,
}

impl Command {
    pub(super) fn new(sink: &str, argv: Vec<String>, store_id: &str, timeout: Duration) -> Command {
        Command {
            sink: sink.to_string(),
            argv,
            store_id: store_id.to_string(),
            timeout,
        }
    }

    pub(super) async fn send(&self, batch: &[ChangeRecord]) -> Result<(), Refused> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let Some((program, args)) = self.argv.split_first() else {
            return Err(Refused::Failed("the command is empty".into()));
        };
        let body = super::batch_body(batch)?;
        let mut child = Process::new(program)
            .args(args)
            .env("GCAL_SYNCD_SINK", &self.sink)
            .env(
                "GCAL_SYNCD_BATCH_ID",
                super::batch_id(&self.store_id, first.seq, last.seq),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Refused::Failed(format!("cannot start {program}: {e}")))?;
        let group = Group(child.id());
        let stdin = child.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input closes the pipe:
                // what it does with the batch is its exit status's business.
                let _ = stdin.write_all(&body).await;
                let _ = stdin.shutdown().await;
            }
        };
        let stdout = child
            .stdout
            .take()
            .map(|o| log_lines(self.sink.clone(), "stdout", o));
        let stderr = child
            .stderr
            .take()
            .map(|e| log_lines(self.sink.clone(), "stderr", e));
        let output = tokio::spawn(async move {
            let out = async {
                if let Some(o) = stdout {
                    o.await;
                }
            };
            let err = async {
                if let Some(e) = stderr {
                    e.await;
                }
            };
            tokio::join!(out, err);
        });
        let run = async {
            let (status, ()) = tokio::join!(child.wait(), feed);
            status
        };
        let result = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(Refused::Failed(format!("the command {status}"))),
            Ok(Err(e)) => Err(Refused::Failed(format!("cannot wait for the command: {e}"))),
            Err(_) => Err(Refused::Failed(format!(
                "the command did not finish within {}; killed",
                humantime::format_duration(self.timeout)
            ))),
        };
        drop(group);
        let _ = child.wait().await;
        if tokio::time::timeout(DRAIN, output).await.is_err() {
            tracing::warn!(sink = %self.sink, "the command's output stayed open after it ended; no longer read");
        }
        result
    }
}

/// Kills the process group when dropped: after the run, on timeout, or
/// when the daemon stops mid-delivery.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        let Some(pid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            return;
        };
        // SAFETY: killpg only sends a signal; the group is the one the
        // child leads (process_group(0)), so it names no other process.
        // ESRCH (the group has already gone) is fine.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

/// Logs each line of `from` (read to the end, so the program never blocks
/// on a full pipe), up to [`MAX_LINES`].
async fn log_lines(sink: String, stream: &'static str, from: impl AsyncRead + Unpin) {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    let mut seen = 0usize;
    while matches!(from.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
        seen += 1;
        if seen <= MAX_LINES {
            let text = String::from_utf8_lossy(&line);
            let text: String = text.trim_end().chars().take(MAX_LINE).collect();
            tracing::info!(sink = %sink, stream = %stream, "{text}");
        }
        line.clear();
    }
    if seen > MAX_LINES {
        tracing::info!(sink = %sink, stream = %stream, lines_not_logged = seen - MAX_LINES, "more output from the command");
    }
}

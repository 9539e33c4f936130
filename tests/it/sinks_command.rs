//! `[[sinks]]` of type command: the batch goes to the program's stdin, exit
//! 0 acknowledges, a failure or a hang (killed after `timeout`, with its
//! children) is retried with the same batch, and the program's output is
//! in the daemon's log under the sink's name.

use std::time::Duration;

use serde_json::Value;

use crate::crash::{calendar_of, start};
use crate::emu;

const WAIT: Duration = Duration::from_secs(60);

/// Fails its first run, hangs (with a child of its own) in its second, and
/// applies every later batch by appending it to `applied`.
const SCRIPT: &str = r#"#!/bin/sh
dir="$1"
n=$(cat "$dir/attempts" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/attempts"
case "$n" in
  1) echo "database is locked" >&2; exit 3 ;;
  2) sleep 600 & echo "$!" > "$dir/sleeper"; wait; exit 0 ;;
esac
cat >> "$dir/applied"
echo >> "$dir/applied"
echo "applied $GCAL_SYNCD_BATCH_ID for $GCAL_SYNCD_SINK"
"#;

/// True while `pid` runs (a zombie waiting for its reaper does not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|rest| rest.trim().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_sink_is_retried_through_a_failure_and_a_hang_then_applies_every_change_once() {
    let (emu, dir) = calendar_of(3, "sink-command").await;
    let script = dir.write("apply.sh", SCRIPT);
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let config = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    dir.write(
        "config.toml",
        &format!(
            "{config}\n[[sinks]]\nname = \"apply\"\ntype = \"command\"\ncommand = [{:?}, {:?}]\ntimeout = \"2s\"\n",
            script.display().to_string(),
            dir.path().display().to_string()
        ),
    );
    let (mut daemon, api) = start(&dir);
    let line = daemon.wait_for_line("stream=stdout", WAIT);
    assert!(
        line.contains("sink=apply") && line.contains("applied msg_"),
        "{line}"
    );
    assert!(line.contains("for apply"), "{line}");
    let stderr = daemon
        .logged("database is locked")
        .expect("the failed run's stderr is logged");
    assert!(
        stderr.contains("sink=apply") && stderr.contains("stream=stderr"),
        "{stderr}"
    );
    assert!(
        daemon
            .logged("killed")
            .is_some_and(|l| l.contains("within 2s")),
        "the hanging run was not reported killed"
    );
    // The hanging run's own child went with it.
    let sleeper = std::fs::read_to_string(dir.path().join("sleeper")).expect("sleeper pid");
    emu::wait_until("the hanging run's child killed", WAIT, || {
        (!running(sleeper.trim())).then_some(())
    })
    .await;

    // Every record once, in order, in the one acknowledged run.
    let seqs: Vec<u64> = crate::sinks_crash::batches(&dir).concat();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("attempts"))
            .expect("attempts")
            .trim(),
        "3"
    );
    let sink = emu::wait_until("the sink's cursor at 3", WAIT, || {
        let (_, sinks) = crate::support::http_get(&api, "/v1/sinks");
        let sinks: Value = serde_json::from_str(&sinks).ok()?;
        (sinks["sinks"][0]["cursor"] == 3).then(|| sinks["sinks"][0].clone())
    })
    .await;
    assert_eq!(sink["type"], "command");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(WAIT), Some(0));
    drop(emu);
}

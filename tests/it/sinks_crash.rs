//! Sinks across a SIGKILL and from the command line: a batch in flight
//! when the daemon is killed is delivered again (and only it), nothing is
//! lost or reordered; `gcal-syncd sinks` shows a disabled sink, and
//! `gcal-syncd sinks reset` enables it in the store while no daemon runs.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::crash::{calendar_of, start};
use crate::emu::{self, Receiver};
use crate::support::{bin, TempDir};

const WAIT: Duration = Duration::from_secs(90);
const EVENTS: u64 = 300;
const BATCH: u64 = 20;

/// Applies each batch by appending it to `applied`; the third run applies
/// its batch and then hangs without acknowledging, as a receiver that
/// wrote the changes but never answered.
const SCRIPT: &str = r#"#!/bin/sh
dir="$1"
n=$(cat "$dir/runs" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/runs"
cat >> "$dir/applied"
echo >> "$dir/applied"
if [ "$n" = 3 ]; then
  echo "$$" > "$dir/holding"
  exec sleep 600
fi
"#;

/// The seqs of each batch a command sink appended to `applied` (one JSON
/// batch per line). Only whole lines: a run may be appending the next one
/// while the test reads.
pub(crate) fn batches(dir: &TempDir) -> Vec<Vec<u64>> {
    std::fs::read_to_string(dir.path().join("applied"))
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let batch: Value = serde_json::from_str(l).expect("a JSON batch per run");
            batch["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .filter_map(|c| c["seq"].as_u64())
                .collect()
        })
        .collect()
}

fn add_sink(dir: &TempDir, sink: &str) {
    let config = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    dir.write("config.toml", &format!("{config}\n{sink}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_mid_delivery_repeats_only_the_batch_in_flight() {
    let (emu, dir) = calendar_of(EVENTS as usize, "sink-sigkill").await;
    let script = dir.write("apply.sh", SCRIPT);
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    add_sink(
        &dir,
        &format!(
            "[[sinks]]\nname = \"apply\"\ntype = \"command\"\ncommand = [{:?}, {:?}]\nbatch_max = {BATCH}\ntimeout = \"10m\"\n",
            script.display().to_string(),
            dir.path().display().to_string()
        ),
    );
    let (mut daemon, _) = start(&dir);
    let holding = emu::wait_until("the third batch in flight", WAIT, || {
        std::fs::read_to_string(dir.path().join("holding")).ok()
    })
    .await;
    daemon.child.kill().expect("SIGKILL");
    let _ = daemon.child.wait();
    // The hanging run outlived the daemon (its own process group).
    let _ = Command::new("kill").args(["-9", holding.trim()]).status();
    let in_flight = batches(&dir).last().cloned().expect("the batch in flight");

    let (mut daemon, _) = start(&dir);
    let all = emu::wait_until("every record applied", WAIT, || {
        let b = batches(&dir);
        (b.iter().flatten().max() == Some(&EVENTS)).then_some(b)
    })
    .await;
    // In order, each record at least once; the only repeat is the batch
    // that was in flight, sent again whole right after it.
    let mut firsts = Vec::new();
    let mut repeats = Vec::new();
    for (i, batch) in all.iter().enumerate() {
        if i > 0 && all[i - 1] == *batch {
            repeats.push(batch.clone());
        } else {
            firsts.extend(batch.iter().copied());
        }
    }
    assert_eq!(
        firsts,
        (1..=EVENTS).collect::<Vec<_>>(),
        "lost or reordered"
    );
    assert_eq!(
        repeats,
        std::slice::from_ref(&in_flight),
        "repeats other than the batch in flight"
    );
    assert_eq!(in_flight, (2 * BATCH + 1..=3 * BATCH).collect::<Vec<_>>());
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(WAIT), Some(0));
    drop(emu);
}

/// Runs `gcal-syncd ARGS --config cli.toml`.
fn cli(dir: &TempDir, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .args(["--config", "cli.toml"])
        .current_dir(dir.path())
        .env_remove("GCAL_SYNCD_CONFIG")
        .output()
        .expect("run gcal-syncd");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sinks_lists_a_disabled_sink_and_reset_enables_it_in_the_store_while_stopped() {
    let receiver = Receiver::start(vec![410, 200]).await;
    let (emu, dir) = calendar_of(3, "sink-cli").await;
    add_sink(
        &dir,
        &format!(
            "[[sinks]]\nname = \"app\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"webhook.secret\"\n",
            receiver.url
        ),
    );
    dir.write("webhook.secret", crate::harness::WEBHOOK_SECRET);
    let (mut daemon, api) = start(&dir);
    // The daemon's file says port 0; the command line needs the real one.
    let text = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    let listen = "listen = \"127.0.0.1:0\"\n[store]";
    assert!(text.contains(listen), "{text}");
    dir.write(
        "cli.toml",
        &text.replace(listen, &format!("listen = \"{api}\"\n[store]")),
    );
    daemon.wait_for_line("SINK DISABLED", WAIT);
    let (code, out) = cli(&dir, &["sinks"]);
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap_or_default();
    assert!(row.contains("disabled") && row.contains("410"), "{out}");
    let (code, out) = cli(&dir, &["status"]);
    assert!(
        code == 0 && out.contains("SINK") && out.contains("disabled"),
        "{out}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(WAIT), Some(0));

    let (code, out) = cli(&dir, &["sinks", "reset", "nosuch"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = cli(&dir, &["sinks", "reset", "app"]);
    assert!(code == 0 && out.contains("enabled in the store"), "{out}");
    let (mut daemon, _) = start(&dir);
    let got = receiver
        .wait_for("a delivery after the reset", WAIT, |p| p.len() >= 2)
        .await;
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "not the same batch again"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(WAIT), Some(0));
    drop(emu);
}

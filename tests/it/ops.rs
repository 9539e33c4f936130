//! Operating it: /metrics parses as Prometheus text and moves with the
//! work done; `gcal-syncd status` against a running daemon and against none.

use std::process::Command;
use std::time::Duration;

use gcal_syncd::emulator::Edit;

use crate::emu::{self, event};
use crate::harness::{last_seq, metric, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_with_pings_list_calls_and_records() {
    let h = Harness::start("metrics", Setup::default()).await;
    emu::wait_until_async("a confirmed channel", WAIT, || async {
        (h.calendar().await["channel"]["confirmed"] == true).then_some(())
    })
    .await;
    let before = h.scrape().await;
    for i in 0..5 {
        h.emu
            .edit(CAL, Edit::Insert(event(&format!("m{i}"), 3)), true)
            .await
            .expect("insert");
    }
    let changes = h.wait_changes("5 created", 0, WAIT, |c| c.len() >= 5).await;
    h.wait_idle_with_token(WAIT).await;
    let after = h.scrape().await;
    let cal = [("account", "emu"), ("calendar", "primary")];
    assert!(
        metric(
            &after,
            "gcal_syncd_pings_received_total",
            &[("state", "exists"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        metric(
            &after,
            "gcal_syncd_pings_received_total",
            &[("state", "sync"), ("outcome", "sync")]
        ) >= 1.0
    );
    assert!(
        metric(&after, "gcal_syncd_events_list_calls_total", &cal)
            > metric(&before, "gcal_syncd_events_list_calls_total", &cal)
    );
    assert!(metric(&after, "gcal_syncd_events_list_items_total", &cal) >= 5.0);
    assert_eq!(
        metric(
            &after,
            "gcal_syncd_change_records_total",
            &[("kind", "created")]
        ),
        changes.len() as f64
    );
    assert_eq!(
        metric(&after, "gcal_syncd_feed_head_seq", &[]),
        last_seq(&changes) as f64
    );
    assert!(
        metric(
            &after,
            "gcal_syncd_sync_passes_total",
            &[("account", "emu"), ("result", "ok")]
        ) >= 1.0
    );
    let full = [("kind", "full"), ("result", "ok")];
    let full: Vec<_> = cal.iter().chain(&full).copied().collect();
    assert_eq!(metric(&after, "gcal_syncd_sync_passes_total", &full), 1.0);
    assert!(metric(&after, "gcal_syncd_last_success_timestamp_seconds", &cal) > 1.7e9);
    let lag = after
        .samples
        .iter()
        .find(|x| x.metric == "gcal_syncd_sync_lag_seconds");
    assert!(lag.is_some(), "no sync_lag_seconds series");
    assert!((0.0..600.0).contains(&metric(&after, "gcal_syncd_sync_lag_seconds", &cal)));
    assert!(metric(&after, "gcal_syncd_channel_expiry_timestamp_seconds", &cal) > 1.7e9);
    assert!(metric(&after, "gcal_syncd_store_size_bytes", &[]) > 0.0);
    assert!(metric(&after, "gcal_syncd_process_resident_memory_bytes", &[]) > 0.0);
    // A forged ping moves the forbidden/unknown counters, not the ok one.
    let ok_before = metric(
        &after,
        "gcal_syncd_pings_received_total",
        &[("outcome", "ok")],
    );
    let r = emu::http()
        .post(format!("http://{}/gcal/notify", h.hook))
        .header("X-Goog-Channel-ID", "nope")
        .header("X-Goog-Resource-State", "exists")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);
    let last = h.scrape().await;
    assert_eq!(
        metric(
            &last,
            "gcal_syncd_pings_received_total",
            &[("outcome", "unknown")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &last,
            "gcal_syncd_pings_received_total",
            &[("outcome", "ok")]
        ),
        ok_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_prints_a_table_and_json_and_fails_clearly_without_a_daemon() {
    let h = Harness::start("status", Setup::default()).await;
    h.wait_idle_with_token(WAIT).await;
    emu::wait_until_async("a confirmed channel", WAIT, || async {
        (h.calendar().await["channel"]["confirmed"] == true).then_some(())
    })
    .await;
    // The harness's file says port 0; status needs the real address.
    let text = std::fs::read_to_string(h.config_path())
        .expect("config")
        .replace(
            "listen = \"127.0.0.1:0\"\n[store]",
            &format!("listen = \"{}\"\n[store]", h.api),
        );
    let cfg = h.dir.write("status.toml", &text);
    let bin = crate::support::bin();
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            Command::new(bin)
                .args(["status", "--config"])
                .arg(&cfg)
                .output()
        }
    })
    .await
    .expect("join")
    .expect("run");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "1 calendars: 1 synced, 1 watched (1 confirmed)",
        "{table}"
    );
    assert!(
        lines[2].starts_with("ACCOUNT") && lines[2].contains("CHANNEL EXPIRES IN"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("emu") && lines[3].contains("primary") && lines[3].contains("idle"),
        "{table}"
    );
    let json = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            Command::new(bin)
                .args(["status", "--json", "--config"])
                .arg(&cfg)
                .output()
        }
    })
    .await
    .expect("join")
    .expect("run");
    let body: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(body["calendars"][0]["calendar_id"], "primary");

    let dead = text.replace(&h.api, "127.0.0.1:9");
    let dead_cfg = h.dir.write("dead.toml", &dead);
    let out = Command::new(bin)
        .args(["status", "--config"])
        .arg(&dead_cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach gcal-syncd at 127.0.0.1:9"),
        "{err}"
    );
}

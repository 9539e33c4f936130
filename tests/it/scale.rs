//! Many calendars on one daemon: a start-up costs one events.list and one
//! events.watch per calendar, and every channel's `sync` message is
//! recorded, however many arrive while the scheduler is busy.

use std::time::Duration;

use gcal_syncd::emulator::{Edit, QuotaKnobs};
use serde_json::Value;

use crate::emu::{self, event};
use crate::harness::{last_seq, metric, Harness, Setup, CAL};
use crate::support::{Daemon, TempDir};
use gcal_syncd::config::ConfigText;

/// More than the 1024 messages the scheduler's queue holds: the hook used
/// to drop the `sync` confirmations past it.
const CALENDARS: usize = 1100;

#[tokio::test(flavor = "multi_thread")]
async fn a_start_up_of_1100_calendars_lists_and_watches_each_once_and_confirms_every_channel() {
    let mut h = Harness::start(
        "scale",
        Setup {
            // The daemon's pacing is not under test here.
            tail: "requests_per_minute = 1000000\n".into(),
            ..Default::default()
        },
    )
    .await;
    h.wait_idle_with_token(Duration::from_secs(60)).await;
    h.stop_daemon().await;
    h.emu.set_quota(QuotaKnobs {
        per_user_per_minute: 1_000_000,
        per_project_per_minute: 1_000_000,
        ..Default::default()
    });
    let ids = rooms(&h, CALENDARS).await;
    let mut followed: Vec<&str> = ids.iter().map(String::as_str).collect();
    followed.push("primary");
    h.set_calendars(&followed).await;
    let before = h.emu.counters();

    h.start_daemon().await;
    let calendars = emu::wait_until_async(
        "every calendar synced and its channel confirmed",
        Duration::from_secs(300),
        || async {
            let (_, body) = h.get("/v1/calendars").await;
            let all = body["calendars"].as_array()?.clone();
            let ready = |c: &Value| {
                c["state"] == "idle"
                    && c["has_sync_token"] == true
                    && c["channel"]["confirmed"] == true
            };
            (all.len() == CALENDARS + 1 && all.iter().all(ready)).then_some(all)
        },
    )
    .await;
    assert_eq!(calendars.len(), CALENDARS + 1);

    let after = h.emu.counters();
    let calls = |c: &gcal_syncd::emulator::Counters, m: &str| c.calls.get(m).copied().unwrap_or(0);
    let listed_twice: Vec<&String> = ids
        .iter()
        .filter(|id| after.list_calls_by_calendar.get(*id).copied().unwrap_or(0) != 1)
        .collect();
    assert!(
        listed_twice.is_empty(),
        "{} of {CALENDARS} new calendars were not listed exactly once (watch first, then one full sync)",
        listed_twice.len()
    );
    assert_eq!(
        calls(&after, "events.watch") - calls(&before, "events.watch"),
        CALENDARS as u64,
        "one channel per new calendar; primary's is still live"
    );
    let records = h
        .wait_changes(
            "a created record per new calendar",
            0,
            Duration::from_secs(60),
            |c| c.iter().filter(|r| r["calendar_id"] != "primary").count() >= CALENDARS,
        )
        .await;
    let mut rooms: Vec<&str> = records
        .iter()
        .filter(|r| r["calendar_id"] != "primary" && r["change"] == "created")
        .filter_map(|r| r["calendar_id"].as_str())
        .collect();
    rooms.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert!(
        rooms == expected,
        "one created record per new calendar, no more, no less"
    );
}

/// Creates `n` calendars of one event each and returns their ids.
async fn rooms(h: &Harness, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = h
            .emu
            .create_calendar(CAL, None, &format!("room {i}"), "UTC")
            .expect("calendar");
        h.emu
            .edit(&id, Edit::Insert(event(&format!("booking {i}"), 3)), false)
            .await
            .expect("insert");
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_on_a_synced_calendar_goes_before_a_start_up_that_fills_the_quota() {
    // Google's quota scaled down to 40 requests a minute in the emulator
    // (403 userRateLimitExceeded past it), the daemon set to 30: the
    // emulator's minute still holds the calls of the daemon's first run.
    let per_minute: u32 = 30;
    let mut h = Harness::start(
        "interactive",
        Setup {
            tail: format!("requests_per_minute = {per_minute}\n"),
            ..Default::default()
        },
    )
    .await;
    h.wait_idle_with_token(Duration::from_secs(60)).await;
    emu::wait_until_async("primary's channel", Duration::from_secs(60), || async {
        (h.calendar().await["channel"]["confirmed"] == true).then_some(())
    })
    .await;
    h.stop_daemon().await;
    h.emu.set_quota(QuotaKnobs {
        per_user_per_minute: 40,
        ..Default::default()
    });
    // 100 new calendars: 200 requests, about 7 minutes of this quota.
    let ids = rooms(&h, 100).await;
    let mut followed: Vec<&str> = ids.iter().map(String::as_str).collect();
    followed.push("primary");
    h.set_calendars(&followed).await;
    let calls = |h: &Harness| {
        let c = h.emu.counters();
        ["events.list", "events.watch"]
            .iter()
            .map(|m| c.calls.get(*m).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let before = calls(&h);
    h.start_daemon().await;
    // Start-up has taken all the quota it may: the window is full.
    emu::wait_until_async(
        "start-up to fill the window",
        Duration::from_secs(60),
        || async { (calls(&h) - before >= u64::from(per_minute) - 2).then_some(()) },
    )
    .await;
    let head = last_seq(&h.changes_after(0).await);
    h.emu
        .edit(CAL, Edit::Insert(event("urgent booking", 2)), true)
        .await
        .expect("insert");
    // Well inside one quota window (62 s): behind the start-up, the
    // ping's list would wait for minutes.
    let got = h
        .wait_changes("the urgent booking", head, Duration::from_secs(45), |c| {
            c.iter().any(|r| r["calendar_id"] == "primary")
        })
        .await;
    assert!(got
        .iter()
        .any(|r| r["event"]["summary"] == "urgent booking"));
    let (_, body) = h.get("/v1/calendars").await;
    let synced = body["calendars"]
        .as_array()
        .expect("calendars")
        .iter()
        .filter(|c| c["has_sync_token"] == true)
        .count();
    assert!(
        synced < 60,
        "the start-up was still going ({synced} of 101 synced) when the ping's change came through"
    );
    let errors = h.scrape().await;
    assert_eq!(
        metric(
            &errors,
            "gcal_syncd_google_errors_total",
            &[("reason", "userRateLimitExceeded")]
        ),
        0.0,
        "the daemon stays under the quota, and Google never refuses it"
    );
    let account = [("account", "emu")];
    let used = metric(&errors, "gcal_syncd_quota_requests", &account);
    assert!(
        used >= 20.0 && used <= f64::from(per_minute),
        "the start-up fills the window: {used}"
    );
    assert_eq!(
        metric(&errors, "gcal_syncd_quota_requests_limit", &account),
        f64::from(per_minute)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_start_up_logs_its_progress_and_status_sums_it_up() {
    let emu = emu::start_default().await;
    emu.set_quota(QuotaKnobs {
        per_user_per_minute: 40,
        ..Default::default()
    });
    let dir = TempDir::new("progress");
    dir.write("sa.json", &emu.service_account_json());
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            emu.create_calendar(CAL, None, &format!("room {i}"), "UTC")
                .expect("calendar"),
        );
    }
    let list = ids.iter().map(|id| format!("{id:?}")).collect::<Vec<_>>();
    let text = ConfigText::new("emu", "sa.json")
        .log_level("info")
        .google(&emu.api_root())
        .public_url("http://127.0.0.1:9/gcal/notify")
        .calendars(&format!("[{}]", list.join(", ")))
        // 120 calls: three minutes at this quota.
        .tail("requests_per_minute = 30\n");
    dir.write("config.toml", &text.render());
    let mut d = Daemon::spawn(&["run", "--config", "config.toml"], dir.path());
    let started = d.wait_for_line("gcal-syncd started", Duration::from_secs(30));
    let api = Daemon::field(&started, "api");
    let line = d.wait_for_line("start-up progress", Duration::from_secs(60));
    assert_eq!(Daemon::field(&line, "calendars"), "60", "{line}");
    let synced: usize = Daemon::field(&line, "synced").parse().expect("synced=N");
    assert!(synced < 60, "{line}");
    assert!(
        line.contains("watched=") && line.contains("eta_s="),
        "{line}"
    );

    let status = dir.write("status.toml", &text.api(&api).render());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::bin())
            .args(["status", "--config"])
            .arg(&status)
            .output()
    })
    .await
    .expect("join")
    .expect("status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("60 calendars: ") && first.contains(" synced, "),
        "{stdout}"
    );
    let _ = d.child.kill();
}

/// Channels with a two-minute life, renewed a minute before they expire
/// (and a spread earlier), on 1000 calendars whose channels were all made
/// in one start-up burst: renewals take about 70% of a quota of 4000 a
/// minute.
const RENEWING: usize = 1000;

#[tokio::test(flavor = "multi_thread")]
async fn renewals_of_1000_channels_under_a_small_quota_never_leave_a_calendar_uncovered_nor_hold_up_a_ping(
) {
    let per_minute: u32 = 4000;
    let mut h = Harness::start(
        "renewals",
        Setup {
            channels: &[
                ("ttl", "\"120s\""),
                ("renew_before", "\"60s\""),
                ("check_schedule", "\"*/2 * * * * *\""),
            ],
            tail: format!("requests_per_minute = {per_minute}\n"),
            ..Default::default()
        },
    )
    .await;
    h.wait_idle_with_token(Duration::from_secs(60)).await;
    h.stop_daemon().await;
    h.emu.set_quota(QuotaKnobs {
        per_user_per_minute: per_minute + 400,
        per_project_per_minute: per_minute + 400,
        ..Default::default()
    });
    let ids = rooms(&h, RENEWING).await;
    let mut followed: Vec<&str> = ids.iter().map(String::as_str).collect();
    followed.push("primary");
    h.set_calendars(&followed).await;
    h.start_daemon().await;
    emu::wait_until_async(
        "every calendar synced and its channel confirmed",
        Duration::from_secs(300),
        || async {
            let (_, body) = h.get("/v1/calendars").await;
            let all = body["calendars"].as_array()?.clone();
            let ready =
                |c: &Value| c["has_sync_token"] == true && c["channel"]["confirmed"] == true;
            (all.len() == RENEWING + 1 && all.iter().all(ready)).then_some(())
        },
    )
    .await;

    // Every channel of the start-up is due within 60 s of its creation:
    // 80 s of edits see all of them replaced, and the first replacements
    // come due again.
    let mut head = last_seq(&h.changes_after(0).await);
    let mut waits = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(80) {
        tick.tick().await;
        let room = &ids[waits.len() * 37 % ids.len()];
        let summary = format!("walk-in {}", waits.len());
        let edited = tokio::time::Instant::now();
        h.emu
            .edit(room, Edit::Insert(event(&summary, 2)), true)
            .await
            .expect("insert");
        // Behind renewals in the queue, a ping's list would wait for the
        // quota window (62 s).
        let got = h
            .wait_changes(&summary, head, Duration::from_secs(20), |c| {
                c.iter().any(|r| r["event"]["summary"] == summary.as_str())
            })
            .await;
        waits.push(edited.elapsed());
        head = last_seq(&got);
    }
    let ended = chrono::Utc::now().timestamp_millis();
    waits.sort_unstable();
    eprintln!(
        "{} edits during renewals: p50 {:?}, max {:?}",
        waits.len(),
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );

    let channels = h.emu.channels()["channels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut by_calendar: std::collections::HashMap<String, Vec<(i64, i64)>> = Default::default();
    for c in &channels {
        let Some(calendar) = c["resource"]["id"].as_str() else {
            continue;
        };
        let at = |k: &str| {
            c[k].as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
        };
        let created = at("created_at").expect("created_at");
        let expires = c["expiration_ms"].as_i64().expect("expiration_ms");
        let end = at("stopped_at").map_or(expires, |s| s.min(expires));
        by_calendar
            .entry(calendar.to_string())
            .or_default()
            .push((created, end));
    }
    assert_eq!(
        by_calendar.len(),
        RENEWING + 1,
        "a channel on every calendar"
    );
    let mut renewed = 0;
    for (calendar, mut spans) in by_calendar {
        spans.sort_unstable();
        renewed += usize::from(spans.len() > 1);
        let mut covered_to = spans[0].1;
        for (created, end) in &spans[1..] {
            assert!(
                *created <= covered_to,
                "{calendar} had no live channel for {} ms before a replacement",
                created - covered_to
            );
            covered_to = covered_to.max(*end);
        }
        assert!(
            covered_to > ended,
            "{calendar}'s last channel lapsed {} ms before the end",
            ended - covered_to
        );
    }
    assert_eq!(
        renewed,
        RENEWING + 1,
        "every channel was replaced at least once"
    );
    let scrape = h.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            "gcal_syncd_google_errors_total",
            &[("reason", "userRateLimitExceeded")]
        ),
        0.0,
        "renewals stay within the quota"
    );
}

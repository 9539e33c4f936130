//! Many calendars on one daemon: a start-up costs one events.list and one
//! events.watch per calendar, and every channel's `sync` message is
//! recorded, however many arrive while the scheduler is busy.

use std::time::Duration;

use gcal_syncd::emulator::{Edit, QuotaKnobs};
use serde_json::Value;

use crate::emu::{self, event};
use crate::harness::{Harness, Setup, CAL};

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
    let mut ids = Vec::with_capacity(CALENDARS);
    for i in 0..CALENDARS {
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

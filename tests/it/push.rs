//! Push end to end: the emulator's notifications reach the daemon's hook,
//! which wakes exactly the right syncs; channels are renewed before they
//! expire; forged pings change nothing.

use std::time::Duration;

use gcal_syncd::emulator::{Edit, PushKnobs};
use serde_json::{json, Value};

use crate::emu::{self, event};
use crate::harness::{last_seq, metric, of_kind, summary, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

fn list_calls(h: &Harness) -> u64 {
    h.emu
        .counters()
        .list_calls_by_calendar
        .get(CAL)
        .copied()
        .unwrap_or(0)
}

async fn wait_channel(h: &Harness) -> Value {
    emu::wait_until_async("a confirmed channel", WAIT, || async {
        let c = h.calendar().await;
        (c["channel"]["confirmed"] == true).then_some(c["channel"].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_1000_pings_costs_a_few_list_calls_and_yields_exactly_1000_updates() {
    // The default page size: a burst of 1000 edits fits in one page.
    let h = Harness::start(
        "burst",
        Setup {
            debounce: "1s",
            page_size: 2500,
            ..Default::default()
        },
    )
    .await;
    h.emu
        .bulk_insert(CAL, (0..1000).map(|i| event(&format!("e{i}"), 1 + i % 28)))
        .expect("bulk");
    h.emu
        .invalidate_sync_tokens(CAL)
        .expect("force a resync to pick the bulk load up");
    h.emu
        .edit(CAL, Edit::Insert(event("wake", 1)), true)
        .await
        .expect("ping");
    let created = h
        .wait_changes("1001 created", 0, WAIT, |c| c.len() >= 1001)
        .await;
    wait_channel(&h).await;
    h.wait_idle_with_token(WAIT).await;
    let ids: Vec<String> = h.emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();
    let before = list_calls(&h);
    for (i, id) in ids.iter().take(1000).enumerate() {
        h.emu
            .edit(
                CAL,
                Edit::Patch(id.clone(), json!({"summary": format!("burst {i}")})),
                true,
            )
            .await
            .expect("edit + ping");
    }
    let updates = h
        .wait_changes("1000 updates", last_seq(&created), WAIT, |c| {
            c.len() >= 1000
        })
        .await;
    // Every ping was answered 200.
    let c = emu::wait_until("every ping delivered", WAIT, || {
        let c = h.emu.counters();
        (c.pings_delivered + c.pings_failed == c.pings_sent.values().sum::<u64>()).then_some(c)
    })
    .await;
    assert_eq!(c.pings_failed, 0, "a ping was not answered with success");
    assert!(c.pings_sent["exists"] >= 1000);
    h.wait_idle_with_token(WAIT).await;
    let after = list_calls(&h);
    assert_eq!(
        updates.len(),
        1000,
        "{}",
        summary(&updates[..10.min(updates.len())])
    );
    assert_eq!(of_kind(&updates, "updated").len(), 1000);
    assert!(
        after - before <= 3,
        "{} events.list calls for one burst",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_are_renewed_before_they_expire_and_old_ones_are_stopped() {
    let setup = Setup {
        channels: &[
            ("ttl", "\"6s\""),
            ("renew_before", "\"3s\""),
            ("check_schedule", "\"* * * * * *\""),
        ],
        ..Default::default()
    };
    let h = Harness::start("renewal", setup).await;
    wait_channel(&h).await;
    let started = std::time::Instant::now();
    let mut edits = 0;
    let mut uncovered = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        let now = chrono::Utc::now();
        let channels = h.emu.channels();
        let covered = channels["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["state"] == "active"
                    && c["resource"]["id"] == CAL
                    && c["expiration_ms"]
                        .as_i64()
                        .is_some_and(|e| e > now.timestamp_millis())
            });
        if !covered {
            uncovered.push(started.elapsed());
        }
        h.emu
            .edit(
                CAL,
                Edit::Insert(event(&format!("during renewal {edits}"), 2)),
                true,
            )
            .await
            .expect("edit");
        edits += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(uncovered.is_empty(), "no live channel at {uncovered:?}");
    let changes = h
        .wait_changes("every edit", 0, WAIT, |c| {
            of_kind(c, "created").len() >= edits
        })
        .await;
    assert_eq!(of_kind(&changes, "created").len(), edits);
    let channels = h.emu.channels()["channels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut mine: Vec<&Value> = channels
        .iter()
        .filter(|c| c["resource"]["id"] == CAL)
        .collect();
    mine.sort_by_key(|c| c["created_at"].as_str().unwrap_or("").to_string());
    assert!(
        mine.len() >= 6,
        "only {} channels in 30 s with a 6 s ttl",
        mine.len()
    );
    for pair in mine.windows(2) {
        let created =
            chrono::DateTime::parse_from_rfc3339(pair[1]["created_at"].as_str().expect("created"))
                .expect("time");
        assert!(
            created.timestamp_millis() < pair[0]["expiration_ms"].as_i64().expect("exp"),
            "a replacement came after its predecessor expired"
        );
    }
    let stopped = mine.iter().filter(|c| c["state"] == "stopped").count();
    assert!(
        stopped >= mine.len() - 2,
        "old channels were not stopped: {stopped} of {}",
        mine.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_past_expiry_a_new_channel_and_a_catch_up_sync_happen() {
    let setup = Setup {
        channels: &[
            ("ttl", "\"3s\""),
            ("renew_before", "\"1s\""),
            ("check_schedule", "\"0 0 * * * *\""),
        ],
        ..Default::default()
    };
    let mut h = Harness::start("expired", setup).await;
    let first = wait_channel(&h).await;
    let created = h.wait_changes("nothing yet", 0, WAIT, |_| true).await;
    h.stop_daemon().await;
    let expiry =
        chrono::DateTime::parse_from_rfc3339(first["expires_at"].as_str().expect("expiry"))
            .expect("time");
    emu::wait_until("the channel to expire while down", WAIT, || {
        (chrono::Utc::now() > expiry).then_some(())
    })
    .await;
    let made_while_down = h
        .emu
        .edit(CAL, Edit::Insert(event("while down", 4)), true)
        .await
        .expect("insert");
    h.start_daemon().await;
    let changes = h
        .wait_changes(
            "the change made while down",
            last_seq(&created),
            WAIT,
            |c| !c.is_empty(),
        )
        .await;
    assert_eq!(changes[0]["event_id"], made_while_down["id"]);
    let second = wait_channel(&h).await;
    assert_ne!(first["id"], second["id"], "the expired channel was reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_message_before_the_watch_response_is_accepted() {
    let setup = Setup::default();
    let emu_knobs = PushKnobs {
        sync_before_response: true,
        ..Default::default()
    };
    let mut h = Harness::start("early-sync", setup).await;
    wait_channel(&h).await;
    h.stop_daemon().await;
    let failed_before = h.emu.counters().pings_failed;
    h.emu.set_push(emu_knobs);
    // A fresh store, so the restarted daemon creates a new channel.
    std::fs::remove_dir_all(h.dir.path().join("store")).expect("wipe store");
    h.start_daemon().await;
    wait_channel(&h).await;
    let c = h.emu.counters();
    assert_eq!(
        c.pings_failed, failed_before,
        "the early sync message was refused: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_pings_trigger_nothing_and_the_daemon_stays_healthy() {
    let h = Harness::start("forged", Setup::default()).await;
    let channel = wait_channel(&h).await;
    h.wait_idle_with_token(WAIT).await;
    let before = list_calls(&h);
    let url = format!("http://{}/gcal/notify", h.hook);
    let http = emu::http();
    let id = channel["id"].as_str().expect("id");
    let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = http.post(&url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let base = |id: &str, token: &str| {
        vec![
            ("X-Goog-Channel-ID", id.to_string()),
            ("X-Goog-Resource-State", "exists".into()),
            ("X-Goog-Channel-Token", token.to_string()),
            ("X-Goog-Message-Number", "7".into()),
        ]
    };
    assert_eq!(
        send(base(id, "wrong-token"), vec![])
            .await
            .expect("send")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        send(
            vec![
                ("X-Goog-Channel-ID", id.to_string()),
                ("X-Goog-Resource-State", "exists".into())
            ],
            vec![]
        )
        .await
        .expect("send")
        .status()
        .as_u16(),
        401,
        "missing token"
    );
    assert_eq!(
        send(base("not-ours", "x"), vec![])
            .await
            .expect("send")
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        send(vec![], vec![]).await.expect("send").status().as_u16(),
        400,
        "missing headers"
    );
    let big = send(base(id, "wrong-token"), vec![b'x'; 10 * 1024 * 1024]).await;
    assert!(
        big.map_or(true, |r| r.status().as_u16() == 413),
        "10 MB body not refused with 413"
    );
    for _ in 0..10_000 {
        let status = send(base("flood-id", "x"), vec![])
            .await
            .expect("send")
            .status()
            .as_u16();
        assert_eq!(status, 404);
    }
    let (status, _) = h.get("/healthz").await;
    assert_eq!(status, 200);
    // The hook pokes a trigger only for an accepted ping: none was accepted.
    let scraped = h.scrape().await;
    let accepted = metric(
        &scraped,
        "gcal_syncd_pings_received_total",
        &[("outcome", "ok")],
    );
    assert_eq!(accepted, 0.0, "a forged ping was accepted");
    assert!(
        metric(
            &scraped,
            "gcal_syncd_pings_received_total",
            &[("outcome", "forbidden")]
        ) >= 2.0,
        "wrong tokens not counted as forbidden"
    );
    let c = h.calendar().await;
    assert_eq!(c["state"], "idle");
    assert_eq!(
        list_calls(&h),
        before,
        "a forged ping caused an events.list call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_pings_are_caught_by_the_poll_and_duplicates_add_no_records() {
    let h = Harness::start(
        "dropped",
        Setup {
            poll_interval: "1s",
            ..Default::default()
        },
    )
    .await;
    wait_channel(&h).await;
    let start = h.wait_changes("startup", 0, WAIT, |_| true).await;
    h.emu.set_push(PushKnobs {
        drop_rate: 1.0,
        ..Default::default()
    });
    let lost = h
        .emu
        .edit(CAL, Edit::Insert(event("ping dropped", 3)), true)
        .await
        .expect("insert");
    let changes = h
        .wait_changes(
            "the change whose ping was dropped",
            last_seq(&start),
            WAIT,
            |c| !c.is_empty(),
        )
        .await;
    assert_eq!(changes[0]["event_id"], lost["id"]);
    h.emu.set_push(PushKnobs {
        duplicate_rate: 1.0,
        reorder_ms: 50,
        ..Default::default()
    });
    for i in 0..20 {
        h.emu
            .edit(CAL, Edit::Insert(event(&format!("dup {i}"), 4)), true)
            .await
            .expect("insert");
    }
    let more = h
        .wait_changes("20 created", last_seq(&changes), WAIT, |c| c.len() >= 20)
        .await;
    emu::wait_until("duplicated pings delivered", WAIT, || {
        let c = h.emu.counters();
        (c.pings_delivered + c.pings_failed == c.pings_sent.values().sum::<u64>()).then_some(())
    })
    .await;
    h.wait_idle_with_token(WAIT).await;
    let all = h.changes_after(last_seq(&changes)).await;
    assert_eq!(
        all.len(),
        20,
        "duplicated pings produced extra records: {}",
        summary(&all)
    );
    assert_eq!(more.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_less_calendar_is_polled_and_reported_poll_only() {
    let h = Harness::start(
        "pushless",
        Setup {
            pushless: true,
            poll_interval: "1s",
            ..Default::default()
        },
    )
    .await;
    let c = emu::wait_until_async("poll-only in /v1/calendars", WAIT, || async {
        let c = h.calendar().await;
        (c["poll_only"] == true).then_some(c)
    })
    .await;
    assert_eq!(c["channel"], Value::Null);
    let start = h.wait_changes("startup", 0, WAIT, |_| true).await;
    let added = h
        .emu
        .edit(CAL, Edit::Insert(event("polled", 5)), true)
        .await
        .expect("insert");
    let changes = h
        .wait_changes("the polled change", last_seq(&start), WAIT, |c| {
            !c.is_empty()
        })
        .await;
    assert_eq!(changes[0]["event_id"], added["id"]);
    assert_eq!(
        h.emu.counters().pings_sent.get("exists"),
        None,
        "a push-less calendar sent pings"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_adds_and_removes_calendars_without_a_restart() {
    let mut h = Harness::start("reload-calendars", Setup::default()).await;
    let primary = h
        .emu
        .edit(CAL, Edit::Insert(event("in primary", 2)), true)
        .await
        .expect("insert");
    let start = h
        .wait_changes("the primary event", 0, WAIT, |c| !c.is_empty())
        .await;
    let team = h
        .emu
        .create_calendar(CAL, None, "Team", "Europe/Paris")
        .expect("calendar");
    let team_event = h
        .emu
        .edit(&team, Edit::Insert(event("in team", 3)), false)
        .await
        .expect("insert");

    // Added: a channel and a full sync, without a restart.
    h.set_calendars(&["primary", &team]).await;
    let added = h
        .wait_changes("the team calendar's event", last_seq(&start), WAIT, |c| {
            c.iter().any(|r| r["calendar_id"] == json!(team))
        })
        .await;
    assert_eq!(added[0]["event_id"], team_event["id"]);
    let (_, cals) = h.get("/v1/calendars").await;
    assert_eq!(cals["calendars"].as_array().map(Vec::len), Some(2));
    emu::wait_until("a channel on the team calendar", WAIT, || {
        h.has_active_channel(&team).then_some(())
    })
    .await;
    let pinged = h
        .emu
        .edit(&team, Edit::Insert(event("pinged in team", 4)), true)
        .await
        .expect("insert");
    h.wait_changes(
        "a pinged change in the new calendar",
        last_seq(&added),
        WAIT,
        |c| c.iter().any(|r| r["event_id"] == pinged["id"]),
    )
    .await;

    // Removed: its channel is stopped and a final deleted record per event.
    let before = h.changes_after(0).await;
    h.set_calendars(&[&team]).await;
    let removed = h
        .wait_changes("primary's final deletes", last_seq(&before), WAIT, |c| {
            c.iter().any(|r| r["calendar_id"] == "primary")
        })
        .await;
    assert_eq!(removed.len(), 1, "{}", summary(&removed));
    assert_eq!(
        (
            removed[0]["change"].as_str(),
            removed[0]["event_id"].clone()
        ),
        (Some("deleted"), primary["id"].clone())
    );
    emu::wait_until("primary's channel stopped", WAIT, || {
        let ch = h.emu.channels();
        (!ch["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["resource"]["id"] == CAL && c["state"] == "active"))
        .then_some(())
    })
    .await;
    let (_, cals) = h.get("/v1/calendars").await;
    assert_eq!(cals["calendars"].as_array().map(Vec::len), Some(1));
}

/// A removed calendar bigger than one purge page (2500 events) gets one
/// final `deleted` record per event, and its events and token are gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_big_removed_calendar_is_purged_page_by_page() {
    const N: usize = 2600;
    let mut h = Harness::start("purge-big", Setup::default()).await;
    h.emu
        .bulk_insert(
            CAL,
            (0..N as u32).map(|i| event(&format!("e{i}"), 1 + i % 28)),
        )
        .expect("bulk");
    h.emu
        .edit(CAL, Edit::Insert(event("last", 2)), true)
        .await
        .expect("insert");
    let created = h
        .wait_changes("every event", 0, WAIT, |c| c.len() > N)
        .await;
    let team = h
        .emu
        .create_calendar(CAL, None, "Team", "Europe/Paris")
        .expect("calendar");
    h.set_calendars(&[&team]).await;
    let removed = h
        .wait_changes("the final deletes", last_seq(&created), WAIT, |c| {
            c.len() > N
        })
        .await;
    let mut ids: Vec<&str> = removed
        .iter()
        .filter(|r| r["change"] == "deleted" && r["calendar_id"] == "primary")
        .filter_map(|r| r["event_id"].as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), removed.len()), (N + 1, N + 1));
    h.stop_daemon().await;
    let store = gcal_syncd::store::Store::open(&h.dir.path().join("store")).expect("store");
    let key = gcal_syncd::store::CalendarKey::new("emu", "primary");
    assert_eq!(store.events(&key).count(), 0, "events left");
    let state = store.calendar(&key).expect("state");
    assert_eq!((state.sync_token, state.events), (None, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn calendars_all_follows_calendars_that_appear_and_disappear() {
    // An hour between polls: only the calendarList channel can bring news in time.
    let mut h = Harness::start(
        "follow-all",
        Setup {
            poll_interval: "1h",
            ..Default::default()
        },
    )
    .await;
    h.follow_all().await;
    emu::wait_until("a calendarList channel", WAIT, || {
        let ch = h.emu.channels();
        ch["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["resource"]["type"] == "calendar_list" && c["state"] == "active")
            .then_some(())
    })
    .await;
    let base = h.wait_changes("nothing", 0, WAIT, |_| true).await;
    let team = h
        .emu
        .create_calendar(CAL, None, "Team", "UTC")
        .expect("calendar");
    let e1 = h
        .emu
        .edit(&team, Edit::Insert(event("team one", 2)), false)
        .await
        .expect("insert");
    let e2 = h
        .emu
        .edit(&team, Edit::Insert(event("team two", 3)), false)
        .await
        .expect("insert");
    let created = h
        .wait_changes("the new calendar's events", last_seq(&base), WAIT, |c| {
            c.iter().filter(|r| r["calendar_id"] == json!(team)).count() >= 2
        })
        .await;
    let ids: Vec<&Value> = created
        .iter()
        .filter(|r| r["calendar_id"] == json!(team))
        .map(|r| &r["event_id"])
        .collect();
    assert!(
        ids.contains(&&e1["id"]) && ids.contains(&&e2["id"]),
        "{}",
        summary(&created)
    );
    emu::wait_until("a channel on the new calendar", WAIT, || {
        h.has_active_channel(&team).then_some(())
    })
    .await;

    h.emu.delete_calendar(&team).expect("delete calendar");
    let gone = h
        .wait_changes(
            "final deletes of the removed calendar",
            last_seq(&created),
            WAIT,
            |c| of_kind(c, "deleted").len() >= 2,
        )
        .await;
    let deleted: Vec<&Value> = of_kind(&gone, "deleted")
        .into_iter()
        .filter(|r| r["calendar_id"] == json!(team))
        .collect();
    assert_eq!(deleted.len(), 2, "{}", summary(&gone));
    emu::wait_until_async(
        "the removed calendar leaves /v1/calendars",
        WAIT,
        || async {
            let (_, cals) = h.get("/v1/calendars").await;
            (!cals["calendars"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["calendar_id"] == json!(team)))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_list_that_cannot_be_read_removes_no_calendar() {
    let mut h = Harness::start(
        "follow-all-unread",
        Setup {
            poll_interval: "1h",
            ..Default::default()
        },
    )
    .await;
    h.follow_all().await;
    let team = h
        .emu
        .create_calendar(CAL, None, "Team", "UTC")
        .expect("calendar");
    let booked = h
        .emu
        .edit(&team, Edit::Insert(event("booked", 2)), false)
        .await
        .expect("insert");
    let base = h
        .wait_changes("the team calendar's event", 0, WAIT, |c| {
            c.iter().any(|r| r["event_id"] == booked["id"])
        })
        .await;
    emu::wait_until("a channel on the team calendar", WAIT, || {
        h.has_active_channel(&team).then_some(())
    })
    .await;
    // The next read of the calendar list fails: a new calendar pings the
    // list's channel, and the read that ping wakes meets a 500.
    let injected = h.emu.counters().faults_injected;
    h.emu.set_faults(vec![gcal_syncd::emulator::FaultRule {
        kind: gcal_syncd::emulator::FaultKind::Backend500,
        rate: 1.0,
        method: Some("calendarList.list".into()),
        remaining: Some(1),
        slow_ms: 0,
    }]);
    let other = h
        .emu
        .create_calendar(CAL, None, "Other", "UTC")
        .expect("calendar");
    emu::wait_until("the failed calendar list read", WAIT, || {
        (h.emu.counters().faults_injected > injected).then_some(())
    })
    .await;
    // The daemon reads the list again on its own, well before the hour of
    // polls, and follows the new calendar.
    let later = h
        .emu
        .edit(&other, Edit::Insert(event("later", 3)), false)
        .await
        .expect("insert");
    let after = h
        .wait_changes("the new calendar's event", last_seq(&base), WAIT, |c| {
            c.iter().any(|r| r["event_id"] == later["id"])
        })
        .await;
    assert!(
        of_kind(&after, "deleted").is_empty(),
        "a failed list read removed calendars: {}",
        summary(&after)
    );
    let (_, cals) = h.get("/v1/calendars").await;
    let followed: Vec<&Value> = cals["calendars"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["calendar_id"])
        .collect();
    for id in [CAL, team.as_str(), other.as_str()] {
        assert!(followed.contains(&&json!(id)), "{id} not followed: {cals}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_on_another_hook_address_replaces_the_channel_at_once() {
    let mut h = Harness::start("push-moved", Setup::default()).await;
    let old = wait_channel(&h).await;
    h.stop_daemon().await;
    // The same store, a new hook.public_url (another port).
    h.hook.clear();
    h.start_daemon().await;
    let new = emu::wait_until_async("a confirmed channel at the new address", WAIT, || async {
        let c = h.calendar().await;
        (c["channel"]["confirmed"] == true && c["channel"]["id"] != old["id"])
            .then_some(c["channel"].clone())
    })
    .await;
    let channels = h.emu.channels();
    let state = |id: &Value| {
        channels["channels"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["id"] == *id))
            .map(|c| c["state"].clone())
    };
    assert_eq!(state(&new["id"]), Some(json!("active")), "{channels}");
    emu::wait_until("the old channel stopped", WAIT, || {
        let all = h.emu.channels();
        all["channels"]
            .as_array()?
            .iter()
            .any(|c| c["id"] == old["id"] && c["state"] == "stopped")
            .then_some(())
    })
    .await;
    // A change now reaches the daemon by push (the poll is an hour away).
    let head = last_seq(&h.changes_after(0).await);
    h.emu
        .edit(CAL, Edit::Insert(event("after the move", 2)), true)
        .await
        .expect("insert");
    h.wait_changes("the pushed record", head, WAIT, |c| !c.is_empty())
        .await;
}

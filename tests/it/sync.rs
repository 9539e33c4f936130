//! The sync engine end to end: the real daemon against the emulator over
//! loopback, checked through the change feed a user reads.

use std::collections::HashMap;
use std::time::Duration;

use gcal_syncd::emulator::dates;
use gcal_syncd::emulator::{Edit, FaultKind, FaultRule};
use serde_json::{json, Value};

use crate::emu::{self, event};
use crate::harness::{last_seq, of_kind, summary, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

fn quick() -> Setup {
    Setup {
        poll_interval: "200ms",
        ..Default::default()
    }
}

async fn seed(h: &Harness, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let v = h
            .emu
            .edit(
                CAL,
                Edit::Insert(event(&format!("event {i}"), 1 + (i % 28) as u32)),
                false,
            )
            .await
            .expect("insert");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    ids
}

fn by_event(changes: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut out: HashMap<String, Vec<&Value>> = HashMap::new();
    for c in changes {
        out.entry(c["event_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn full_sync_of_10k_events_reports_10k_created_and_a_restart_reports_nothing() {
    let mut h = Harness::start(
        "full10k",
        Setup {
            page_size: 2500,
            ..Default::default()
        },
    )
    .await;
    h.emu
        .bulk_insert(
            CAL,
            (0..10_000).map(|i| event(&format!("bulk {i}"), 1 + i % 28)),
        )
        .expect("bulk");
    // The daemon started before the load: its startup pass saw an empty calendar.
    h.stop_daemon().await;
    h.start_daemon().await;
    let changes = h
        .wait_changes("10000 created", 0, WAIT, |c| c.len() >= 10_000)
        .await;
    assert_eq!(
        changes.len(),
        10_000,
        "{}",
        summary(&changes[..20.min(changes.len())])
    );
    assert!(changes.iter().all(|c| c["change"] == "created"
        && c["changed_fields"] == json!([])
        && c["previous"].is_null()));
    assert_eq!(
        by_event(&changes).len(),
        10_000,
        "an event was reported twice"
    );
    let seqs: Vec<u64> = changes.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq not contiguous and increasing"
    );
    let cal = h.wait_idle_with_token(WAIT).await;
    assert_eq!(cal["events"], 10_000);

    h.stop_daemon().await;
    h.start_daemon().await;
    emu::wait_until_async("a pass after the restart", WAIT, || async {
        (h.calendar().await["passes"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    assert_eq!(
        h.changes_after(last_seq(&changes)).await.len(),
        0,
        "a restart reported changes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_edit_is_reported_with_exactly_its_fields() {
    let h = Harness::start("edits", quick()).await;
    let ids = seed(&h, 5).await;
    let created = h.wait_changes("5 created", 0, WAIT, |c| c.len() == 5).await;
    let before_reminder = h.emu.event(CAL, &ids[4]).expect("event");
    let edits = [
        json!({"summary": "renamed"}),
        json!({"description": "new words"}),
        json!({"start": {"dateTime": dates::utc(20, 15, 0)}, "end": {"dateTime": dates::utc(20, 16, 0)}}),
        json!({"attendees": [{"email": "guest@example.com"}]}),
        json!({"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]}}),
    ];
    for (id, patch) in ids.iter().zip(edits) {
        h.emu
            .edit(CAL, Edit::Patch(id.clone(), patch), false)
            .await
            .expect("patch");
    }
    let after_reminder = h.emu.event(CAL, &ids[4]).expect("event");
    assert_eq!(
        before_reminder["updated"], after_reminder["updated"],
        "emulator changed updated on a reminder edit"
    );
    let changes = h
        .wait_changes("5 updates", last_seq(&created), WAIT, |c| c.len() >= 5)
        .await;
    assert_eq!(changes.len(), 5, "{}", summary(&changes));
    let got = by_event(&changes);
    let want: [&[&str]; 5] = [
        &["summary"],
        &["description"],
        &["end", "sequence", "start"],
        &["attendees"],
        &["reminders"],
    ];
    for (id, fields) in ids.iter().zip(want) {
        let c = got[id][0];
        assert_eq!(c["change"], "updated");
        assert_eq!(c["changed_fields"], json!(fields), "event {id}");
        assert_ne!(c["previous"], Value::Null);
        assert_eq!(c["etag"], h.emu.event(CAL, id).expect("event")["etag"]);
    }
    assert_eq!(
        got[&ids[0]][0]["sequence"], 0,
        "a summary edit must not bump sequence"
    );
    assert_eq!(got[&ids[0]][0]["previous"]["summary"], "event 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_event_a_series_and_one_instance_is_reported_as_deleted() {
    let h = Harness::start("deletes", quick()).await;
    let ids = seed(&h, 2).await;
    // Daily at 09:00 Berlin, 08:00 UTC in winter.
    let monday = dates::winter_monday();
    let series = |summary: &str| {
        json!({"summary": summary, "recurrence": ["RRULE:FREQ=DAILY;COUNT=5"],
               "start": {"dateTime": dates::at(monday, 9, 0), "timeZone": "Europe/Berlin"},
               "end": {"dateTime": dates::at(monday, 9, 30), "timeZone": "Europe/Berlin"}})
    };
    let doomed = h
        .emu
        .edit(CAL, Edit::Insert(series("doomed series")), false)
        .await
        .expect("insert")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let kept = h
        .emu
        .edit(CAL, Edit::Insert(series("kept series")), false)
        .await
        .expect("insert")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // An exception of the doomed series, so deleting the series touches it too.
    let exception = format!("{doomed}{}", dates::instance_suffix(monday, 1, 8));
    h.emu
        .edit(
            CAL,
            Edit::Patch(exception.clone(), json!({"summary": "moved"})),
            false,
        )
        .await
        .expect("exception");
    let created = h.wait_changes("5 created", 0, WAIT, |c| c.len() == 5).await;
    assert_eq!(
        of_kind(&created, "created").len(),
        5,
        "{}",
        summary(&created)
    );

    let instance = format!("{kept}{}", dates::instance_suffix(monday, 2, 8));
    h.emu
        .edit(CAL, Edit::Delete(ids[0].clone()), false)
        .await
        .expect("delete single");
    h.emu
        .edit(CAL, Edit::Delete(doomed.clone()), false)
        .await
        .expect("delete series");
    h.emu
        .edit(CAL, Edit::Delete(instance.clone()), false)
        .await
        .expect("cancel one instance");
    let changes = h
        .wait_changes("4 deletions", last_seq(&created), WAIT, |c| c.len() >= 4)
        .await;
    let deleted: Vec<&str> = of_kind(&changes, "deleted")
        .iter()
        .map(|c| c["event_id"].as_str().unwrap_or(""))
        .collect();
    let mut want = vec![
        ids[0].as_str(),
        doomed.as_str(),
        exception.as_str(),
        instance.as_str(),
    ];
    want.sort();
    let mut got = deleted.clone();
    got.sort();
    assert_eq!(got, want, "{}", summary(&changes));
    assert_eq!(changes.len(), 4, "extra records: {}", summary(&changes));
    let inst = changes
        .iter()
        .find(|c| c["event_id"] == json!(instance))
        .expect("instance record");
    assert_eq!(inst["event"]["recurringEventId"], json!(kept));
    assert_eq!(
        h.wait_idle_with_token(WAIT).await["events"],
        2,
        "one single and the kept series remain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_410_resync_reports_exactly_the_differences_of_the_gap() {
    resync_reports_exactly_the_gap("resync", 410).await;
}

/// Google answers 400 "Invalid sync token value." (location `syncToken`)
/// for a token it does not know; retrying it never helps, so it is a 410.
#[tokio::test(flavor = "multi_thread")]
async fn a_400_naming_the_sync_token_is_a_resync_too_not_a_retry_loop() {
    resync_reports_exactly_the_gap("resync-400", 400).await;
}

/// The stored token dies (answered with `answer`) while one event changes,
/// one is deleted and one is created: exactly those three records, and the
/// next incremental pass works on the new token.
async fn resync_reports_exactly_the_gap(name: &str, answer: u16) {
    let h = Harness::start(name, quick()).await;
    let ids = seed(&h, 30).await;
    let created = h
        .wait_changes("30 created", 0, WAIT, |c| c.len() == 30)
        .await;
    h.wait_idle_with_token(WAIT).await;
    // The gap: the token dies, and meanwhile one event changes, one is
    // deleted (its tombstone purged, so only the sweep can find it) and
    // one is created.
    h.emu
        .invalidate_sync_tokens_as(CAL, answer)
        .expect("invalidate");
    h.emu
        .edit(
            CAL,
            Edit::Patch(ids[0].clone(), json!({"location": "Room 9"})),
            false,
        )
        .await
        .expect("patch");
    h.emu
        .edit(CAL, Edit::Delete(ids[1].clone()), false)
        .await
        .expect("delete");
    h.emu.expire_tombstones(CAL).expect("purge");
    let added = h
        .emu
        .edit(CAL, Edit::Insert(event("born in the gap", 3)), false)
        .await
        .expect("insert");
    let _ = h
        .wait_changes("3 differences", last_seq(&created), WAIT, |c| c.len() >= 3)
        .await;
    h.wait_state("idle", WAIT).await;
    let all = h.changes_after(last_seq(&created)).await;
    assert_eq!(all.len(), 3, "{}", summary(&all));
    let got = by_event(&all);
    assert_eq!(got[&ids[0]][0]["change"], "updated");
    assert_eq!(got[&ids[0]][0]["changed_fields"], json!(["location"]));
    assert_eq!(got[&ids[1]][0]["change"], "deleted");
    assert_eq!(
        got[added["id"].as_str().expect("id")][0]["change"],
        "created"
    );
    let cal = h.calendar().await;
    assert_eq!(cal["events"], 30);
    assert_eq!(cal["last_error"], Value::Null, "{cal}");

    // The token stored by the resync is a good one.
    h.emu
        .edit(
            CAL,
            Edit::Patch(ids[2].clone(), json!({"summary": "after"})),
            true,
        )
        .await
        .expect("patch");
    let after = h
        .wait_changes("the edit after the resync", last_seq(&all), WAIT, |c| {
            !c.is_empty()
        })
        .await;
    assert_eq!(after.len(), 1, "{}", summary(&after));
    assert_eq!(after[0]["changed_fields"], json!(["summary"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn short_and_empty_pages_and_changes_made_while_paging_are_all_handled() {
    let mut setup = quick();
    setup.page_size = 7;
    let mut h = Harness::start("paging", setup).await;
    h.stop_daemon().await;
    let ids = seed(&h, 120).await;
    h.emu.set_short_page_rate(0.4);
    // Slow pages, so that the edits below land while the daemon pages.
    h.emu.set_faults(vec![FaultRule {
        kind: FaultKind::Slow,
        rate: 1.0,
        method: Some("events.list".into()),
        remaining: None,
        slow_ms: 150,
    }]);
    h.start_daemon().await;
    emu::wait_until_async("the full sync to be under way", WAIT, || async {
        (h.calendar().await["progress"]["pages"].as_u64() >= Some(3)).then_some(())
    })
    .await;
    for id in &ids[..10] {
        h.emu
            .edit(
                CAL,
                Edit::Patch(id.clone(), json!({"summary": "edited while paging"})),
                false,
            )
            .await
            .expect("patch");
    }
    let mut added = Vec::new();
    for i in 0..5 {
        added.push(
            h.emu
                .edit(
                    CAL,
                    Edit::Insert(event(&format!("added while paging {i}"), 5)),
                    false,
                )
                .await
                .expect("insert")["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let final_etags: HashMap<String, String> = h
        .emu
        .etags(CAL)
        .into_iter()
        .map(|(id, etag, _)| (id, etag))
        .collect();
    let changes = h
        .wait_changes("every event at its final etag", 0, WAIT, |c| {
            let latest: HashMap<&str, &str> = c
                .iter()
                .map(|x| {
                    (
                        x["event_id"].as_str().unwrap_or(""),
                        x["etag"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            final_etags
                .iter()
                .all(|(id, etag)| latest.get(id.as_str()) == Some(&etag.as_str()))
        })
        .await;
    let counters = h.emu.counters();
    assert!(counters.list_items > 0);
    let got = by_event(&changes);
    assert_eq!(got.len(), 125, "every event reported");
    for id in &added {
        assert_eq!(
            got[id].iter().filter(|c| c["change"] == "created").count(),
            1,
            "{id}"
        );
    }
    for id in &ids[..10] {
        let last = got[id].last().expect("record");
        assert_eq!(last["event"]["summary"], "edited while paging");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_20_percent_injected_failures_every_change_arrives_and_none_repeats() {
    let mut setup = quick();
    setup.page_size = 40;
    let h = Harness::start("faults", setup).await;
    let rule = |kind| FaultRule {
        kind,
        rate: 0.05,
        method: Some("events.list".into()),
        remaining: None,
        slow_ms: 0,
    };
    h.emu.set_faults(vec![
        rule(FaultKind::Backend500),
        rule(FaultKind::Unavailable503),
        rule(FaultKind::RateLimit429),
        rule(FaultKind::RateLimit403),
    ]);
    let ids = seed(&h, 300).await;
    let created = h
        .wait_changes("300 created", 0, WAIT, |c| c.len() >= 300)
        .await;
    for id in ids.iter().step_by(10) {
        h.emu
            .edit(
                CAL,
                Edit::Patch(id.clone(), json!({"description": "changed under faults"})),
                false,
            )
            .await
            .expect("patch");
    }
    let updates = h
        .wait_changes("30 updates", last_seq(&created), WAIT, |c| c.len() >= 30)
        .await;
    let all: Vec<Value> = created.into_iter().chain(updates).collect();
    for (id, records) in by_event(&all) {
        for pair in records.windows(2) {
            assert_ne!(
                pair[0]["etag"], pair[1]["etag"],
                "event {id} reported twice in a row at one etag"
            );
        }
    }
    assert_eq!(of_kind(&all, "created").len(), 300);
    assert_eq!(of_kind(&all, "updated").len(), 30);
    assert!(
        h.emu.counters().faults_injected > 0,
        "no fault was injected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_returns_when_a_change_lands_and_after_limit_paginate() {
    let h = Harness::start(
        "longpoll",
        Setup {
            poll_interval: "500ms",
            ..Default::default()
        },
    )
    .await;
    seed(&h, 10).await;
    let first = h
        .wait_changes("10 created", 0, WAIT, |c| c.len() == 10)
        .await;
    let head = last_seq(&first);
    let started = std::time::Instant::now();
    let poll = {
        let url = format!("http://{}/v1/changes?after={head}&wait=60", h.api);
        tokio::spawn(async move {
            emu::http()
                .get(url)
                .send()
                .await
                .expect("poll")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    h.emu
        .edit(CAL, Edit::Insert(event("wakes the poll", 9)), false)
        .await
        .expect("insert");
    let body = tokio::time::timeout(Duration::from_secs(50), poll)
        .await
        .expect("long-poll returned before its wait")
        .expect("join");
    assert!(started.elapsed() < Duration::from_secs(50));
    assert_eq!(body["changes"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["next"], json!(head + 1));

    // after/limit page through the feed exactly.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let (_, body) = h.get(&format!("/v1/changes?after={after}&limit=3")).await;
        let batch = body["changes"].as_array().cloned().unwrap_or_default();
        assert!(batch.len() <= 3);
        if batch.is_empty() {
            assert_eq!(body["next"], json!(after), "next must stay put at the end");
            break;
        }
        after = body["next"].as_u64().expect("next");
        paged.extend(batch);
    }
    let seqs: Vec<u64> = paged.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<u64>>());
    // An empty wait on a quiet feed returns after the wait, empty.
    let (status, body) = h
        .get(&format!("/v1/changes?after={}&wait=1", head + 1))
        .await;
    assert_eq!(
        (status, body["changes"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_api_input_is_a_400_with_a_message() {
    let h = Harness::start("badinput", Setup::default()).await;
    for (query, want) in [
        ("after=-1", "after must be a non-negative integer"),
        ("limit=0", "limit must be between 1 and 10000"),
        ("limit=1000000000", "limit must be between 1 and 10000"),
        ("wait=3600", "wait must be between 0 and 60"),
        ("after=abc", "after must be a non-negative integer"),
        ("limit=", "limit must be a non-negative integer"),
        ("junk=1", "unknown parameter"),
        (
            "after=99999999999999999999999",
            "after must be a non-negative integer",
        ),
    ] {
        let (status, body) = h.get(&format!("/v1/changes?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(want)),
            "{query}: {body}"
        );
    }
    let (status, _) = h.get("/v1/nope").await;
    assert_eq!(status, 404);
    let (status, body) = h.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}

//! `/v1/snapshot`: every live event of a calendar as stored, streamed, with
//! `as_of`; loading it and following the feed from `as_of` gives the
//! calendar as Google has it.

use std::collections::BTreeMap;
use std::time::Duration;

use gcal_syncd::emulator::Edit;
use serde_json::{json, Value};

use crate::emu::event;
use crate::harness::{Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

/// The emulator's live events: id -> etag.
fn live(h: &Harness) -> BTreeMap<String, String> {
    h.emu
        .etags(CAL)
        .into_iter()
        .filter(|(_, _, cancelled)| !cancelled)
        .map(|(id, etag, _)| (id, etag))
        .collect()
}

/// What a consumer of the whole feed holds: id -> etag.
fn mirror_of(records: &[Value]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for r in records {
        let id = r["event_id"].as_str().unwrap_or("").to_string();
        match r["change"].as_str() {
            Some("deleted") => m.remove(&id),
            _ => m.insert(id, r["etag"].as_str().unwrap_or("").to_string()),
        };
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_then_the_feed_from_as_of_is_the_calendar() {
    let h = Harness::start("snapshot", Setup::default()).await;
    // Big enough for several 64 KB chunks.
    h.emu
        .bulk_insert(
            CAL,
            (0..400u32).map(|i| event(&format!("s{i}"), 1 + i % 28)),
        )
        .expect("bulk");
    h.emu
        .edit(CAL, Edit::Insert(event("ping", 2)), true)
        .await
        .expect("insert");
    let ids: Vec<String> = live(&h).into_keys().collect();
    for id in ids.iter().take(10) {
        h.emu
            .edit(CAL, Edit::Delete(id.clone()), false)
            .await
            .expect("delete");
    }
    for id in ids.iter().skip(10).take(10) {
        h.emu
            .edit(
                CAL,
                Edit::Patch(id.clone(), json!({"summary": "edited"})),
                true,
            )
            .await
            .expect("patch");
    }
    let want = live(&h);
    h.wait_changes("every change", 0, WAIT, |c| mirror_of(c) == want)
        .await;

    // "primary" percent-encoded: the query is decoded.
    let (status, snap) = h
        .get("/v1/snapshot?account=emu&calendar_id=%70rimary")
        .await;
    assert_eq!(status, 200, "{snap}");
    let (_, health) = h.get("/healthz").await;
    assert_eq!(snap["as_of"], health["feed_head"], "as_of is the head");
    assert_eq!(snap["store_id"], health["store_id"]);
    assert_eq!(
        (snap["account"].as_str(), snap["calendar_id"].as_str()),
        (Some("emu"), Some("primary"))
    );
    let events = snap["events"].as_array().expect("events");
    let as_of = snap["as_of"].as_u64().expect("as_of");
    let mut mirror: BTreeMap<String, String> = BTreeMap::new();
    for e in events {
        let seq = e["seq"].as_u64().expect("seq");
        assert!(seq >= 1 && seq <= as_of, "seq {seq} outside 1..={as_of}");
        assert_eq!(e["event"]["id"], e["event_id"]);
        assert_eq!(e["event"]["etag"], e["etag"]);
        mirror.insert(
            e["event_id"].as_str().expect("id").into(),
            e["etag"].as_str().expect("etag").into(),
        );
    }
    assert_eq!(
        mirror, want,
        "the snapshot is every live event with its etag"
    );

    // More changes after it: following the feed from as_of catches up.
    for id in ids.iter().skip(20).take(5) {
        h.emu
            .edit(
                CAL,
                Edit::Patch(id.clone(), json!({"summary": "later"})),
                true,
            )
            .await
            .expect("patch");
    }
    h.emu
        .edit(CAL, Edit::Delete(ids[30].clone()), true)
        .await
        .expect("delete");
    let want = live(&h);
    let later = h
        .wait_changes("the later changes", as_of, WAIT, |c| {
            c.iter().any(|r| r["change"] == "deleted")
                && c.iter()
                    .filter(|r| r["changed_fields"] == json!(["summary"]))
                    .count()
                    >= 5
        })
        .await;
    for (id, etag) in mirror_of(&later) {
        mirror.insert(id, etag);
    }
    for r in later.iter().filter(|r| r["change"] == "deleted") {
        mirror.remove(r["event_id"].as_str().unwrap_or(""));
    }
    assert_eq!(mirror, want, "snapshot + feed after as_of");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_snapshot_requests_are_refused_clearly() {
    let h = Harness::start("snapshot-bad", Setup::default()).await;
    for (query, status, says) in [
        ("", 400, "required"),
        ("?account=emu", 400, "required"),
        (
            "?account=emu&calendar_id=primary&x=1",
            400,
            "unknown parameter",
        ),
        (
            "?account=emu&calendar_id=nope",
            404,
            "not a calendar this daemon follows",
        ),
    ] {
        let (got, body): (u16, Value) = h.get(&format!("/v1/snapshot{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{query}: {body}"
        );
    }
}

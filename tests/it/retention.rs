//! `feed.retention`: old change records are removed, readers whose cursor is
//! behind the removed ones get a 410 that says where to continue, seqs are
//! never handed out twice, and a configured sink holds every record it has
//! not passed.

use std::time::Duration;

use gcal_syncd::emulator::Edit;
use serde_json::json;

use crate::emu::{self, event};
use crate::harness::{metric, Harness, Setup, CAL};
use crate::support::{require_tools, TempDir};

const WAIT: Duration = Duration::from_secs(60);

async fn insert(h: &Harness, summary: &str) {
    h.emu
        .edit(CAL, Edit::Insert(event(summary, 3)), true)
        .await
        .expect("insert");
}

async fn counter(h: &Harness, name: &str) -> f64 {
    metric(&h.scrape().await, name, &[])
}

/// A daemon whose feed keeps records for one second.
async fn short_retention(name: &str) -> Harness {
    Harness::start(
        name,
        Setup {
            tail: "[feed]\nretention = \"1s\"\n".into(),
            ..Default::default()
        },
    )
    .await
}

/// Five records made, then removed by retention.
async fn five_records_removed(h: &Harness) {
    for i in 0..5 {
        insert(h, &format!("r{i}")).await;
    }
    emu::wait_until_async("all 5 records removed", WAIT, || async {
        (counter(h, "gcal_syncd_feed_pruned_records_total").await >= 5.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn old_records_are_removed_and_a_cursor_behind_them_gets_410() {
    let mut h = short_retention("retention").await;
    five_records_removed(&h).await;

    let (status, body) = h.get("/v1/changes?after=0").await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["pruned_through"], 5, "{body}");
    let msg = body["error"].as_str().expect("message");
    assert!(
        msg.contains("feed.retention") && msg.contains("after=5"),
        "{msg}"
    );
    let (status, body) = h.get("/v1/changes?after=5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["changes"], &body["next"]),
        (&json!([]), &json!(5)),
        "{body}"
    );

    // Every record is gone; after a restart the next one still gets seq 6.
    h.stop_daemon().await;
    h.start_daemon().await;
    insert(&h, "r5").await;
    let head = emu::wait_until_async("a new record", WAIT, || async {
        let head = counter(&h, "gcal_syncd_feed_head_seq").await;
        (head != 5.0).then_some(head)
    })
    .await;
    assert_eq!(head, 6.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_has_not_passed_the_records_keeps_them() {
    let h = Harness::start(
        "retention-sink",
        Setup {
            tail: "[feed]\nretention = \"1s\"\n[[sinks]]\nname = \"app\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/changes\"\nsecret_file = \"webhook.secret\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    for i in 0..3 {
        insert(&h, &format!("s{i}")).await;
    }
    let changes = h.wait_changes("3 created", 0, WAIT, |c| c.len() >= 3).await;
    let newest = changes
        .iter()
        .filter_map(|c| c["detected_at"].as_str())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .max()
        .expect("detected_at");
    emu::wait_until("every record older than the retention", WAIT, || {
        (chrono::Utc::now() > newest + chrono::Duration::milliseconds(1100)).then_some(())
    })
    .await;
    // A pass that started after that point has had its chance to remove them.
    let passes = counter(&h, "gcal_syncd_feed_retention_passes_total").await;
    emu::wait_until_async("two more retention passes", WAIT, || async {
        (counter(&h, "gcal_syncd_feed_retention_passes_total").await >= passes + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        counter(&h, "gcal_syncd_feed_pruned_records_total").await,
        0.0
    );
    assert_eq!(h.changes_after(0).await.len(), 3);
}

/// The README's consumer loop, started with cursor 0 against a feed whose
/// first five records are gone, gets the 410, reloads the calendar from
/// its snapshot (every event, with its etag) and goes on from its as_of.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs curl and jq; .ci/run installs them"]
async fn the_readme_loop_moves_past_a_retention_gap() {
    require_tools(&["curl", "jq"]);
    let h = short_retention("retention-loop").await;
    five_records_removed(&h).await;
    let dir = TempDir::new("retention-loop");
    let script = dir.write("loop.sh", &crate::readme::feed_loop());
    let cursor = dir.path().join("cursor");
    let err = dir.path().join("stderr");
    let out = dir.path().join("stdout");
    let mut child = std::process::Command::new("sh")
        .arg(&script)
        .env("API", format!("http://{}", h.api))
        .env("CURSOR", &cursor)
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run the loop");
    let saved = emu::wait_until("the loop saves a cursor", WAIT, || {
        std::fs::read_to_string(&cursor)
            .ok()
            .filter(|c| !c.trim().is_empty())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(saved.trim(), "5", "the snapshot's as_of");
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        said.contains("missed records up to 5: reloading from snapshots"),
        "{said}"
    );
    let printed = std::fs::read_to_string(&out).unwrap_or_default();
    let mut loaded: Vec<String> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("snapshot primary "))
        .map(String::from)
        .collect();
    loaded.sort();
    let mut live: Vec<String> = h
        .emu
        .etags(CAL)
        .into_iter()
        .filter(|(_, _, cancelled)| !cancelled)
        .map(|(id, etag, _)| format!("{id} {etag}"))
        .collect();
    live.sort();
    assert_eq!(loaded, live, "the loop's reload; it printed:\n{printed}");
}

async fn head(h: &Harness) -> u64 {
    metric(&h.scrape().await, "gcal_syncd_feed_head_seq", &[]) as u64
}

async fn insert_id(h: &Harness, body: serde_json::Value) -> String {
    h.emu
        .edit(CAL, Edit::Insert(body), true)
        .await
        .expect("insert")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn edit(h: &Harness, e: Edit) {
    h.emu.edit(CAL, e, true).await.expect("edit");
}

/// How far retention has removed records (0 while it has removed none).
async fn pruned_through(h: &Harness) -> u64 {
    match h.get("/v1/changes?after=0").await {
        (410, body) => body["pruned_through"].as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// Stops the daemon and checks its store's bodies against what refers to
/// them; `bodies` is how many there must be, when known.
async fn check_bodies(h: &mut Harness, bodies: Option<usize>) {
    h.stop_daemon().await;
    {
        let store = gcal_syncd::store::Store::open(&h.dir.path().join("store")).expect("store");
        let check = store.check_bodies().expect("check");
        assert_eq!(
            (check.dangling, check.unreferenced),
            (0, 0),
            "bodies: {check:?}"
        );
        if let Some(n) = bodies {
            assert_eq!((check.stored, check.referenced), (n, n), "{check:?}");
        }
    }
    h.start_daemon().await;
}

/// Retention removes a body once nothing refers to it: not its event's
/// head, nor a record kept. Through updates, deletions, occurrences of a
/// series hidden and shown again (before and after their deletion's record
/// is removed), the store holds exactly the bodies something refers to.
#[tokio::test(flavor = "multi_thread")]
async fn retention_frees_exactly_the_bodies_nothing_refers_to() {
    use gcal_syncd::emulator::dates;
    let mut h = short_retention("retention-bodies").await;
    h.wait_idle_with_token(WAIT).await;
    let monday = dates::winter_monday();
    let a = insert_id(&h, event("a", 3)).await;
    let b = insert_id(&h, event("b", 4)).await;
    let series = insert_id(
        &h,
        json!({"summary": "daily", "recurrence": ["RRULE:FREQ=DAILY;COUNT=5"],
        "start": {"dateTime": dates::at(monday, 9, 0), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": dates::at(monday, 9, 30), "timeZone": "Europe/Berlin"}}),
    )
    .await;
    emu::wait_until_async("3 created", WAIT, || async {
        (head(&h).await >= 3).then_some(())
    })
    .await;
    let first = format!("{series}{}", dates::instance_suffix(monday, 1, 8));
    let second = format!("{series}{}", dates::instance_suffix(monday, 2, 8));
    edit(&h, Edit::Patch(a.clone(), json!({"summary": "a2"}))).await;
    edit(&h, Edit::Delete(b)).await;
    edit(&h, Edit::Delete(first.clone())).await;
    edit(&h, Edit::Delete(second.clone())).await;
    emu::wait_until_async("7 records", WAIT, || async {
        (head(&h).await >= 7).then_some(())
    })
    .await;
    assert_eq!(head(&h).await, 7, "3 created, 1 updated, 3 deleted");
    // Whatever retention removed so far, nothing dangles or is left over.
    check_bodies(&mut h, None).await;

    // Shown again, probably while its deletion's record is kept.
    let restore = |id: &str| Edit::Patch(id.to_string(), json!({"status": "confirmed"}));
    edit(&h, restore(&second)).await;
    emu::wait_until_async("every record removed", WAIT, || async {
        (pruned_through(&h).await >= 8).then_some(())
    })
    .await;
    // Shown again after its deletion's record was removed; a live event
    // deleted after its creation's record was.
    edit(&h, restore(&first)).await;
    edit(&h, Edit::Delete(a)).await;
    emu::wait_until_async("the last records removed", WAIT, || async {
        (pruned_through(&h).await >= 10).then_some(())
    })
    .await;
    assert_eq!(head(&h).await, 10, "2 more created, 1 more deleted");
    // Left: the series and its two occurrences shown again, no record.
    assert_eq!(h.wait_idle_with_token(WAIT).await["events"], 3);
    check_bodies(&mut h, Some(3)).await;
}

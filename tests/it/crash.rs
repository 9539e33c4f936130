//! Crash safety: SIGKILL the real daemon process in the middle of a long
//! full sync and of a long incremental sync, restart it, and check that
//! every change arrived at least once and that the store ends equal to the
//! emulator (every event's etag).

use std::collections::HashMap;
use std::time::Duration;

use gcal_syncd::emulator::{Edit, FaultKind, FaultRule, Options};
use gcal_syncd::store::{CalendarKey, Store};
use serde_json::{json, Value};

use crate::emu::{self, event};
use crate::harness::CAL;
use crate::support::{Daemon, TempDir};
use gcal_syncd::config::ConfigText;

const WAIT: Duration = Duration::from_secs(90);

pub(crate) fn config(dir: &TempDir, api_root: &str) {
    let text = ConfigText::new("emu", "sa.json")
        .log_level("info")
        .google(api_root)
        .public_url("http://127.0.0.1:9/gcal/notify")
        .sync("page_size", "100")
        .sync("poll_interval", "\"300ms\"")
        .sync("debounce", "\"0s\"")
        .sync("retry_base", "\"50ms\"");
    dir.write("config.toml", &text.render());
}

/// An emulator whose calendar holds `n` events, and a directory with the
/// daemon's configuration for it.
pub(crate) async fn calendar_of(n: usize, name: &str) -> (gcal_syncd::emulator::Emulator, TempDir) {
    let emu = emu::start_default().await;
    emu.bulk_insert(
        CAL,
        (0..n as u32).map(|i| event(&format!("e{i}"), 1 + i % 28)),
    )
    .expect("bulk");
    let dir = TempDir::new(name);
    dir.write("sa.json", &emu.service_account_json());
    config(&dir, &emu.api_root());
    (emu, dir)
}

pub(crate) fn start(dir: &TempDir) -> (Daemon, String) {
    let mut d = Daemon::spawn(&["run", "--config", "config.toml"], dir.path());
    let line = d.wait_for_line("gcal-syncd started", Duration::from_secs(30));
    (d, Daemon::field(&line, "api"))
}

async fn calendar(api: &str) -> Value {
    let body: Value = match emu::http()
        .get(format!("http://{api}/v1/calendars"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    body["calendars"][0].clone()
}

async fn wait_pages(api: &str, pages: u64) {
    emu::wait_until_async(&format!("{pages} pages into the pass"), WAIT, || async {
        (calendar(api).await["progress"]["pages"].as_u64() >= Some(pages)).then_some(())
    })
    .await;
}

pub(crate) async fn wait_synced(api: &str) {
    emu::wait_until_async("an idle calendar with a sync token", WAIT, || async {
        let c = calendar(api).await;
        (c["state"] == "idle" && c["has_sync_token"] == true).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_full_and_incremental_sync_loses_nothing() {
    let emu = emu::start(Options {
        allow_http: true,
        ..Default::default()
    })
    .await;
    let dir = TempDir::new("crash");
    dir.write("sa.json", &emu.service_account_json());
    config(&dir, &emu.api_root());
    emu.bulk_insert(CAL, (0..6000).map(|i| event(&format!("e{i}"), 1 + i % 28)))
        .expect("bulk");
    // Slow pages: a full sync takes a few seconds, so a kill lands inside it.
    emu.set_faults(vec![FaultRule {
        kind: FaultKind::Slow,
        rate: 1.0,
        method: Some("events.list".into()),
        remaining: None,
        slow_ms: 40,
    }]);
    let ids: Vec<String> = emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();

    // 1. Killed in the middle of the first full sync; edits while it is down.
    let (mut d, api) = start(&dir);
    wait_pages(&api, 15).await;
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(20));
    for id in ids.iter().take(50) {
        emu.edit(
            CAL,
            Edit::Patch(id.clone(), json!({"summary": "edited while down"})),
            false,
        )
        .await
        .expect("patch");
    }
    for id in ids.iter().skip(50).take(20) {
        emu.edit(CAL, Edit::Delete(id.clone()), false)
            .await
            .expect("delete");
    }
    let (mut d, api) = start(&dir);
    wait_synced(&api).await;

    // 2. Killed in the middle of a long incremental sync.
    for id in ids.iter().skip(100).take(3000) {
        emu.edit(
            CAL,
            Edit::Patch(id.clone(), json!({"description": "bulk edit"})),
            false,
        )
        .await
        .expect("patch");
    }
    wait_pages(&api, 5).await;
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(20));
    for id in ids.iter().skip(3200).take(30) {
        emu.edit(
            CAL,
            Edit::Patch(id.clone(), json!({"location": "after the second kill"})),
            false,
        )
        .await
        .expect("patch");
    }
    let (mut d, api) = start(&dir);
    wait_synced(&api).await;
    emu.set_faults(vec![]);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));

    // The store equals the emulator, and every final version was reported.
    let store = Store::open(&dir.path().join("store")).expect("open store");
    let key = CalendarKey::new("emu", "primary");
    let stored: HashMap<String, Option<String>> = store
        .events(&key)
        .map(|e| e.expect("event"))
        .map(|e| (e.id, e.etag))
        .collect();
    let live: HashMap<String, Option<String>> = emu
        .etags(CAL)
        .into_iter()
        .filter(|(_, _, cancelled)| !cancelled)
        .map(|(id, etag, _)| (id, Some(etag)))
        .collect();
    assert_eq!(
        stored.len(),
        live.len(),
        "store and emulator disagree on the number of events"
    );
    for (id, etag) in &live {
        assert_eq!(stored.get(id), Some(etag), "event {id} differs");
    }
    let mut reported: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
    for c in records(&store) {
        reported
            .entry(c.event_id.clone())
            .or_default()
            .push((format!("{:?}", c.change), c.etag.clone()));
    }
    for (id, etag) in &live {
        assert!(
            reported
                .get(id)
                .is_some_and(|r| r.iter().any(|(_, e)| e == etag)),
            "final version of {id} never reported"
        );
    }
    for id in ids.iter().skip(50).take(20) {
        assert!(
            reported
                .get(id)
                .is_some_and(|r| r.iter().any(|(k, _)| k == "Deleted")),
            "deletion of {id} never reported"
        );
    }
}

/// Every change record of a calendar, from the store, in seq order.
pub(crate) fn records(store: &Store) -> Vec<gcal_syncd::store::ChangeRecord> {
    let mut out = Vec::new();
    let mut after = gcal_syncd::store::Seq::ZERO;
    loop {
        let batch = store.changes_after(after, 10_000).expect("feed");
        let Some(last) = batch.last() else { break };
        after = last.seq;
        out.extend(batch);
    }
    out
}

/// Runs the daemon until the calendar is synced, then stops it cleanly.
async fn sync_and_stop(dir: &TempDir) {
    let (mut d, api) = start(dir);
    wait_synced(&api).await;
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
}

/// Runs the daemon with the fail point that aborts it right after its
/// `cut`-th page transaction; returns the store it left.
fn abort_after(dir: &TempDir, cut: usize) -> Store {
    let failpoint = format!("abort_after_chunk:{cut}");
    let mut d = Daemon::spawn_with_env(
        &["run", "--config", "config.toml"],
        dir.path(),
        &[("GCAL_SYNCD_FAILPOINT", failpoint.as_str())],
    );
    assert_eq!(
        d.wait_exit(WAIT),
        None,
        "the daemon should have been stopped by its fail point"
    );
    Store::open(&dir.path().join("store")).expect("open store")
}

/// A page is written as several transactions (store::CHUNK_EVENTS events
/// each, the sync token in the last). Stop the process between every two
/// of them, in a full sync and in an incremental one: after each stop the
/// store holds exactly the transactions before it and the old token; after
/// a restart every change is reported exactly once, seqs without a gap.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_between_the_transactions_of_a_page_loses_and_doubles_nothing() {
    use gcal_syncd::store::{ChangeKind, CHUNK_EVENTS};
    let n = 2 * CHUNK_EVENTS + 100; // three transactions per page
    let key = CalendarKey::new("emu", "primary");
    for cut in 1..=2 {
        let (emu, dir) = calendar_of(n, "page-cut").await;
        let text = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
        dir.write(
            "config.toml",
            &text.replace("page_size = 100", &format!("page_size = {n}")),
        );

        // The first full sync: one page of n events, stopped after `cut`.
        let store = abort_after(&dir, cut);
        let state = store.calendar(&key).expect("state");
        assert_eq!(
            state.sync_token, None,
            "cut {cut}: a token before the page's last transaction"
        );
        assert_eq!(
            records(&store).len(),
            cut * CHUNK_EVENTS,
            "cut {cut}: records after the stop"
        );
        assert_eq!(
            state.events,
            (cut * CHUNK_EVENTS) as u64,
            "cut {cut}: event count after the stop"
        );
        drop(store);
        sync_and_stop(&dir).await;

        // An incremental page of n edits, stopped after `cut`.
        let token = Store::open(&dir.path().join("store"))
            .expect("open store")
            .calendar(&key)
            .expect("state")
            .sync_token;
        assert!(token.is_some(), "cut {cut}: no token after the full sync");
        for (id, _, _) in emu.etags(CAL) {
            emu.edit(
                CAL,
                Edit::Patch(id, json!({"summary": "second version"})),
                false,
            )
            .await
            .expect("patch");
        }
        let store = abort_after(&dir, cut);
        let state = store.calendar(&key).expect("state");
        assert_eq!(
            state.sync_token, token,
            "cut {cut}: the token moved before the page's last transaction"
        );
        assert_eq!(
            records(&store).len(),
            n + cut * CHUNK_EVENTS,
            "cut {cut}: records after the second stop"
        );
        drop(store);
        sync_and_stop(&dir).await;

        let store = Store::open(&dir.path().join("store")).expect("open store");
        // Each event's first body (its created record's, and its update's
        // previous) and second (its update's, and its head): stored once.
        assert_eq!(
            store.check_bodies().expect("bodies"),
            gcal_syncd::store::BodyCheck {
                stored: 2 * n,
                referenced: 2 * n,
                dangling: 0,
                unreferenced: 0
            },
            "cut {cut}: bodies"
        );
        let all = records(&store);
        let seqs: Vec<u64> = all.iter().map(|c| c.seq.get()).collect();
        assert_eq!(
            seqs,
            (1..=2 * n as u64).collect::<Vec<_>>(),
            "cut {cut}: seqs with a gap"
        );
        let mut per_event: HashMap<&str, Vec<ChangeKind>> = HashMap::new();
        for c in &all {
            per_event
                .entry(c.event_id.as_str())
                .or_default()
                .push(c.change);
        }
        assert_eq!(per_event.len(), n, "cut {cut}: events reported");
        for (id, kinds) in &per_event {
            assert_eq!(
                kinds,
                &[ChangeKind::Created, ChangeKind::Updated],
                "cut {cut}: records of {id}"
            );
        }
        let state = store.calendar(&key).expect("state");
        assert_eq!(state.events, n as u64, "cut {cut}: event count");
        emu.shutdown().await;
    }
}

/// Events of a calendar that takes two pages of final records (a purge
/// page is 2500 events).
const PURGED: usize = 2600;

/// A synced calendar of [`PURGED`] events, then removed from the
/// configuration while the daemon is stopped (the account follows another
/// calendar instead), then a start stopped by its fail point after the
/// first page of the final records. Returns the emulator, the directory,
/// the other calendar's id and the store the stop left.
async fn purge_cut_short(name: &str) -> (gcal_syncd::emulator::Emulator, TempDir, String, Store) {
    let (emu, dir) = calendar_of(PURGED, name).await;
    sync_and_stop(&dir).await;
    let other = emu
        .create_calendar(CAL, None, "Other", "UTC")
        .expect("calendar");
    let text = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    let followed = "calendars = [\"primary\"]";
    assert!(text.contains(followed), "{text}");
    dir.write(
        "config.toml",
        &text.replace(followed, &format!("calendars = [\"{other}\"]")),
    );
    let mut d = Daemon::spawn_with_env(
        &["run", "--config", "config.toml"],
        dir.path(),
        &[("GCAL_SYNCD_FAILPOINT", "abort_after_purge_page:1")],
    );
    assert_eq!(
        d.wait_exit(WAIT),
        None,
        "the daemon should have been stopped by its fail point"
    );
    let store = Store::open(&dir.path().join("store")).expect("open store");
    (emu, dir, other, store)
}

/// How many records of each kind the feed holds for each event of primary.
fn kinds_by_event(store: &Store) -> HashMap<String, Vec<gcal_syncd::store::ChangeKind>> {
    let mut by_event: HashMap<String, Vec<_>> = HashMap::new();
    for r in records(store) {
        if r.calendar_id == "primary" {
            by_event.entry(r.event_id).or_default().push(r.change);
        }
    }
    by_event
}

/// A calendar removed from the configuration while the daemon was stopped
/// gets its final `deleted` records at the next start, as a reload would
/// have given them; a stop in the middle of them leaves no sync token, and
/// the start after finishes them: every event deleted exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_removed_while_stopped_gets_its_final_records_at_start_even_across_a_crash() {
    use gcal_syncd::store::ChangeKind::{Created, Deleted};
    let key = CalendarKey::new("emu", "primary");
    let (_emu, dir, _other, store) = purge_cut_short("purge-at-start").await;
    assert_eq!(
        store.calendar(&key).expect("state").sync_token,
        None,
        "the token outlived the first page of final records"
    );
    let deleted = |by: &HashMap<String, Vec<_>>| {
        by.values()
            .filter(|k: &&Vec<_>| k.contains(&Deleted))
            .count()
    };
    let cut = kinds_by_event(&store);
    assert_eq!(deleted(&cut), 2500, "deleted records after the stop");
    assert_eq!(store.events(&key).count(), PURGED - 2500, "events left");
    drop(store);

    let (mut d, _) = start(&dir);
    let line = d.wait_for_line("final deleted records written", WAIT);
    assert_eq!(Daemon::field(&line, "records"), (PURGED - 2500).to_string());
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
    let store = Store::open(&dir.path().join("store")).expect("open store");
    let by_event = kinds_by_event(&store);
    assert_eq!(by_event.len(), PURGED, "events with records");
    for (id, kinds) in &by_event {
        assert_eq!(kinds, &vec![Created, Deleted], "records of {id}");
    }
    assert_eq!(store.events(&key).count(), 0, "events left");
    drop(store);
    // Started again, it has nothing more to say about the calendar.
    let (mut d, api) = start(&dir);
    wait_synced(&api).await;
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
    assert!(d.logged("final deleted records written").is_none());
}

/// A calendar brought back after its final records were cut short is fully
/// synced again (its token went first): the events deleted before the stop
/// are reported created again, the others not at all, and the store ends
/// equal to the emulator. With the token kept, an incremental pass would
/// never have reported the deleted ones again.
#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_brought_back_after_a_purge_cut_short_loses_no_event() {
    use gcal_syncd::store::ChangeKind::{Created, Deleted};
    let key = CalendarKey::new("emu", "primary");
    let (emu, dir, other, store) = purge_cut_short("purge-back").await;
    drop(store);
    let text = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    dir.write(
        "config.toml",
        &text.replace(
            &format!("calendars = [\"{other}\"]"),
            &format!("calendars = [\"primary\", \"{other}\"]"),
        ),
    );
    let (mut d, _) = start(&dir);
    loop {
        let line = d.wait_for_line("sync pass done", WAIT);
        if line.contains("calendar=primary") {
            assert!(line.contains("kind=\"full\""), "{line}");
            break;
        }
    }
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
    let store = Store::open(&dir.path().join("store")).expect("open store");
    let by_event = kinds_by_event(&store);
    let deleted_then_created = by_event
        .values()
        .filter(|k| **k == vec![Created, Deleted, Created])
        .count();
    let untouched = by_event.values().filter(|k| **k == vec![Created]).count();
    assert_eq!(
        (deleted_then_created, untouched),
        (2500, PURGED - 2500),
        "records per event after the calendar came back"
    );
    let stored: HashMap<String, String> = store
        .events(&key)
        .map(|v| v.expect("event"))
        .map(|v| (v.id, v.etag.unwrap_or_default()))
        .collect();
    let google: HashMap<String, String> = emu
        .etags(CAL)
        .into_iter()
        .map(|(id, etag, _)| (id, etag))
        .collect();
    assert_eq!(stored.len(), PURGED);
    assert!(stored == google, "the store differs from the emulator");
}

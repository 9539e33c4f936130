//! The store: every tree round-trips, awkward calendar ids stay apart, the
//! page write is all-or-nothing, newer schemas and second openers are
//! refused with clear messages.

use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use gcal_syncd::store::*;

use crate::support::TempDir;

/// When the test records were detected: an hour before the test started
/// (fixed once per run, so every record agrees).
static DETECTED: LazyLock<DateTime<Utc>> = LazyLock::new(|| Utc::now() - Duration::hours(1));

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn key(id: &str) -> CalendarKey {
    CalendarKey::new("clinic", id)
}

fn version(id: &str, etag: &str) -> EventVersion {
    EventVersion {
        id: id.into(),
        etag: Some(etag.into()),
        sequence: Some(0),
        updated: Some(stamp(*DETECTED - Duration::seconds(1))),
        status: Some("confirmed".into()),
        generation: 1,
        last_change: Default::default(),
        body: Body::New(json!({"id": id, "etag": etag, "summary": "s"}).into()),
    }
}

fn change(seq: u64, cal: &CalendarKey, id: &str) -> ChangeRecord<Body> {
    ChangeRecord {
        seq: Seq::new(seq),
        account: cal.account.clone(),
        calendar_id: cal.calendar_id.clone(),
        event_id: id.into(),
        change: ChangeKind::Created,
        etag: Some("\"1\"".into()),
        sequence: Some(0),
        updated: None,
        changed_fields: vec![],
        event: version(id, "\"1\"").body,
        previous: None,
        detected_at: (*DETECTED).into(),
    }
}

fn page(cal: &CalendarKey, ids: &[&str], seqs: &[u64], token: &str) -> PageWrite {
    PageWrite {
        calendar: cal.clone(),
        upserts: ids.iter().map(|id| version(id, "\"1\"")).collect(),
        deletes: vec![],
        changes: ids
            .iter()
            .zip(seqs)
            .map(|(id, s)| change(*s, cal, id))
            .collect(),
        state: CalendarState {
            sync_token: Some(token.into()),
            events: ids.len() as u64,
            ..Default::default()
        },
    }
}

#[test]
fn every_tree_round_trips() {
    let dir = TempDir::new("roundtrip");
    let path = dir.path().join("store");
    let cal = key("primary");
    {
        let store = Store::open(&path).expect("open");
        store
            .apply_page(page(&cal, &["aaa", "bbb"], &[1, 2], "tok1"))
            .expect("apply");
        let channel = ChannelRecord {
            id: "chan-1".into(),
            calendar: cal.clone(),
            token: gcal_syncd::secret::Secret::new("channel-secret"),
            resource_id: Some("res".into()),
            expiration_ms: Some(1_800_000_000_000),
            state: ChannelState::Active,
            confirmed: true,
            address: None,
        };
        store.put_channel(&channel).expect("channel");
        store.set_cursor("app", Seq::new(2)).expect("cursor");
        store.flush_blocking().expect("flush");
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(
        store.calendar(&cal).expect("cal").sync_token.as_deref(),
        Some("tok1")
    );
    assert_eq!(store.calendars().expect("cals").len(), 1);
    let ids: Vec<String> = store.events(&cal).map(|e| e.expect("event").id).collect();
    assert_eq!(ids, ["aaa", "bbb"]);
    let bbb = store.event(&cal, "bbb").expect("get").expect("stored");
    let Body::Stored(body) = bbb.body else {
        panic!("a stored version names its body")
    };
    assert_eq!(
        EventVersion {
            body: version("bbb", "\"1\"").body,
            ..bbb
        },
        EventVersion {
            last_change: Seq::new(2),
            ..version("bbb", "\"1\"")
        },
        "a version names the seq of its event's latest record"
    );
    assert_eq!(
        Body::New(store.body(body).expect("body")),
        version("bbb", "\"1\"").body
    );
    let log = store.changes_after(Seq::ZERO, 10).expect("log");
    assert_eq!(
        Body::New(log[1].event.clone()),
        version("bbb", "\"1\"").body,
        "a record serves its body"
    );
    assert_eq!(
        store.check_bodies().expect("check"),
        BodyCheck {
            stored: 2,
            referenced: 2,
            dangling: 0,
            unreferenced: 0
        },
        "a body the version and its record both hold is stored once"
    );
    assert_eq!(log.iter().map(|c| c.seq.get()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        store.changes_after(Seq::new(1), 10).expect("log")[0].event_id,
        "bbb"
    );
    assert_eq!(store.last_seq().expect("seq").get(), 2);
    let channels = store.channels().expect("channels");
    assert_eq!(channels[0].token.expose(), "channel-secret");
    assert_eq!(store.cursor("app").expect("cursor"), Some(Seq::new(2)));
    store.remove_channel("chan-1").expect("remove");
    assert!(store.channels().expect("channels").is_empty());
}

#[test]
fn awkward_calendar_ids_do_not_collide() {
    let dir = TempDir::new("keys");
    let store = Store::open(&dir.path().join("store")).expect("open");
    let ids = [
        "a/b",
        "a",
        "a/b/c",
        "x@group.calendar.google.com#1",
        "ümlaut/日本",
        "a\u{0}b",
    ];
    for (i, id) in ids.iter().enumerate() {
        let mut p = page(
            &key(id),
            &[&format!("ev{i}")],
            &[i as u64 + 1],
            &format!("tok-{i}"),
        );
        p.state.events = 1;
        store.apply_page(p).expect("apply");
    }
    for (i, id) in ids.iter().enumerate() {
        let events: Vec<String> = store
            .events(&key(id))
            .map(|e| e.expect("event").id)
            .collect();
        assert_eq!(events, [format!("ev{i}")], "calendar {id:?}");
        assert_eq!(
            store.calendar(&key(id)).expect("state").sync_token,
            Some(format!("tok-{i}"))
        );
    }
    let mut listed: Vec<String> = store
        .calendars()
        .expect("list")
        .into_iter()
        .map(|(k, _)| k.calendar_id)
        .collect();
    listed.sort();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn apply_page_is_all_or_nothing() {
    let dir = TempDir::new("atomic");
    let store = Store::open(&dir.path().join("store")).expect("open");
    let cal = key("primary");
    store
        .apply_page(page(&cal, &["aaa"], &[1], "tok1"))
        .expect("first page");
    // seq 1 is taken: the whole second page must be refused.
    let bad = page(&cal, &["bbb", "ccc"], &[2, 1], "tok2");
    let err = store.apply_page(bad).expect_err("duplicate seq");
    assert!(err.to_string().contains("seq 1 is already stored"), "{err}");
    assert_eq!(store.event(&cal, "bbb").expect("get"), None);
    assert_eq!(
        store.calendar(&cal).expect("state").sync_token.as_deref(),
        Some("tok1")
    );
    assert_eq!(store.last_seq().expect("seq").get(), 1);
    assert_eq!(
        store.changes_after(Seq::ZERO, 10).expect("log")[0].event_id,
        "aaa"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("schema");
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).expect("open");
        store
            .set_schema_version_for_tests(SCHEMA_VERSION + 1)
            .expect("bump");
        store.flush_blocking().expect("flush");
    }
    let err = Store::open(&path).err().expect("refused");
    let msg = err.to_string();
    let want = format!(
        "schema version {}, newer than {SCHEMA_VERSION}",
        SCHEMA_VERSION + 1
    );
    assert!(msg.contains(&want), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn a_second_opener_gets_a_clear_message() {
    let dir = TempDir::new("lock");
    let path = dir.path().join("store");
    let _first = Store::open(&path).expect("open");
    let err = Store::open(&path).err().expect("second open refused");
    assert_eq!(
        err.to_string(),
        format!(
            "the store at {} is in use by another process (is gcal-syncd already running?)",
            path.display()
        )
    );
}

#[test]
fn a_corrupt_store_is_moved_aside_not_deleted() {
    let dir = TempDir::new("corrupt");
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).expect("open");
        store
            .apply_page(page(&key("primary"), &["aaa"], &[1], "tok1"))
            .expect("apply");
        store.flush_blocking().expect("flush");
    }
    // A torn write of sled's config file.
    let conf = path.join("conf");
    let garbled: Vec<u8> = std::fs::read(&conf)
        .expect("conf")
        .iter()
        .map(|b| b ^ 0x5a)
        .collect();
    std::fs::write(&conf, &garbled).expect("garble");

    let store = Store::open(&path).expect("recovered");
    let aside = store
        .recovered_from()
        .expect("recovery reported")
        .to_path_buf();
    assert!(aside
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("store.corrupt-")));
    assert_eq!(
        std::fs::read(aside.join("conf")).expect("kept"),
        garbled,
        "the old store must be kept"
    );
    assert_eq!(
        store.calendar(&key("primary")).expect("state").sync_token,
        None,
        "starts empty"
    );
    // The new feed continues above any seq the lost one can have held, so a
    // consumer's cursor (here 1) stays behind the new records.
    let floor = store.last_seq().expect("seq").get();
    assert!(
        floor > 1_700_000_000_000,
        "no seq floor after recovery: {floor}"
    );
    drop(store);
    let reopened = Store::open(&path).expect("reopen");
    assert_eq!(reopened.recovered_from(), None);
    assert_eq!(
        reopened.last_seq().expect("seq").get(),
        floor,
        "the floor must survive a restart"
    );
}

#[test]
fn retention_removes_the_oldest_records_up_to_age_and_seq_limits() {
    let dir = TempDir::new("prune");
    let store = Store::open(&dir.path().join("store")).expect("open");
    let cal = key("primary");
    store
        .apply_page(page(&cal, &["a", "b", "c"], &[1, 2, 3], "tok"))
        .expect("page");
    let after = (*DETECTED + Duration::seconds(1)).into();
    let before = (*DETECTED - Duration::seconds(1)).into();
    assert_eq!(
        store.prune_changes(before, Seq::MAX, 100).expect("prune"),
        0
    );
    assert_eq!(
        store.prune_changes(after, Seq::new(2), 100).expect("prune"),
        2,
        "a sink at seq 2 holds seq 3"
    );
    assert_eq!(store.pruned_through().expect("floor").get(), 2);
    let left: Vec<u64> = store
        .changes_after(Seq::ZERO, 10)
        .expect("log")
        .iter()
        .map(|c| c.seq.get())
        .collect();
    assert_eq!(left, [3]);
    assert_eq!(store.prune_changes(after, Seq::MAX, 100).expect("prune"), 1);
    assert_eq!(store.pruned_through().expect("floor").get(), 3);
    assert!(store.changes_after(Seq::ZERO, 10).expect("log").is_empty());
    assert_eq!(
        store.last_seq().expect("seq").get(),
        3,
        "a removed seq is never handed out again"
    );
    // The event versions are not the feed's: they stay.
    assert!(store.event(&cal, "a").expect("get").is_some());
}

/// Channel tokens live in the store: its directory is 0700 and its files
/// 0600, also for a store made before with wider permissions.
#[test]
fn the_store_is_readable_by_its_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777);
    let dir = TempDir::new("private");
    let path = dir.path().join("store");
    std::fs::create_dir_all(&path).expect("mkdir");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    drop(Store::open(&path).expect("open"));
    std::fs::set_permissions(path.join("conf"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let store = Store::open(&path).expect("reopen");
    store.flush_blocking().expect("flush");
    assert_eq!(mode(&path), 0o700);
    for entry in std::fs::read_dir(&path)
        .expect("list")
        .map(|e| e.expect("entry"))
    {
        if entry.file_type().expect("type").is_file() {
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
}

/// Restores `from` over `to`, keeping `to`'s durable-head marker: the store
/// went back in time while the daemon's memory of it did not.
fn restore_keeping_marker(from: &std::path::Path, to: &std::path::Path) {
    let marker = std::fs::read(to.join("head.json")).expect("marker");
    for entry in std::fs::read_dir(to).expect("store dir") {
        let p = entry.expect("entry").path();
        if p.file_name().is_some_and(|n| n != "head.json") {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("rm dir");
            } else {
                std::fs::remove_file(&p).expect("rm");
            }
        }
    }
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success());
    std::fs::write(to.join("head.json"), marker).expect("marker back");
}

#[test]
fn a_store_behind_its_durable_head_or_without_data_is_moved_aside_not_served() {
    let dir = TempDir::new("rollback");
    let path = dir.path().join("store");
    let backup = dir.path().join("backup");
    let cal = key("primary");
    let id = {
        let store = Store::open(&path).expect("open");
        store
            .apply_page(page(&cal, &["aaa"], &[1], "tok1"))
            .expect("apply");
        store.flush_blocking().expect("flush");
        store.mark_durable(Seq::new(1)).expect("mark");
        store.id().to_string()
    };
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&path)
        .arg(&backup)
        .status()
        .expect("cp");
    assert!(ok.success());
    {
        let store = Store::open(&path).expect("reopen");
        assert_eq!((store.id(), store.recovered_from()), (id.as_str(), None));
        store
            .apply_page(page(&cal, &["bbb", "ccc"], &[2, 3], "tok2"))
            .expect("apply");
        store.flush_blocking().expect("flush");
        store.mark_durable(Seq::new(3)).expect("mark");
    }
    restore_keeping_marker(&backup, &path);

    let store = Store::open(&path).expect("recovered, not served");
    let aside = store
        .recovered_from()
        .expect("recovery reported")
        .to_path_buf();
    assert_ne!(store.id(), id, "a replaced store gets a new id");
    assert!(
        store.last_seq().expect("seq").get() > 3,
        "seqs 2 and 3 must not be handed out again"
    );
    assert_eq!(
        store.calendar(&cal).expect("state").sync_token,
        None,
        "starts empty"
    );
    assert!(aside.join("db").exists(), "the old store is kept");
    let new_id = store.id().to_string();
    drop(store);

    // Its data file gone: the marker still remembers the feed.
    std::fs::remove_file(path.join("db")).expect("rm db");
    let store = Store::open(&path).expect("recovered again");
    assert!(
        store.recovered_from().is_some(),
        "a missing db is damage too"
    );
    assert_ne!(store.id(), new_id);
}

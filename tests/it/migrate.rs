//! Schema 1 -> 2: a store written in the layout of gcal-syncd 52933f4
//! (bodies inside event versions and change records) is upgraded in place
//! at start-up, resumably, without writing a record or resyncing.

use std::collections::HashMap;
use std::time::Duration;

use gcal_syncd::emulator::Edit;
use gcal_syncd::store::{BodyCheck, CalendarKey, Store};
use serde_json::{json, Value};

use crate::crash::{calendar_of, records, start, wait_synced};
use crate::emu;
use crate::harness::CAL;
use crate::support::{Daemon, TempDir};

const WAIT: Duration = Duration::from_secs(90);
/// Events in the calendar: the migration takes several batches.
const N: usize = 600;

/// A calendar key as schema 1 encodes it: account and calendar id, each
/// u32-length-prefixed.
fn calendar_key(account: &str, calendar: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [account, calendar] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A change record as schema 1 stored it (and as the feed serves it).
fn record(seq: u64, change: &str, item: &Value, previous: Option<&Value>) -> Value {
    let fields: Vec<&str> = match previous {
        Some(p) if change == "updated" => {
            let (a, b) = (p.as_object(), item.as_object());
            let mut keys: Vec<&str> = a
                .into_iter()
                .chain(b)
                .flat_map(|m| m.keys().map(String::as_str))
                .filter(|k| !["etag", "updated"].contains(k) && p.get(*k) != item.get(*k))
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
        _ => vec![],
    };
    json!({
        "seq": seq, "account": "emu", "calendar_id": "primary",
        "event_id": item["id"], "change": change, "etag": item["etag"],
        "sequence": item["sequence"], "updated": item["updated"],
        "changed_fields": fields, "event": item, "previous": previous,
        "detected_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// Writes, as gcal-syncd 52933f4 would have after a full sync of the
/// emulator's calendar and one incremental pass that saw an update and a
/// deletion, its schema-1 store; returns the records it holds.
async fn schema_1_store(emu: &gcal_syncd::emulator::Emulator, dir: &TempDir) -> Vec<Value> {
    let api = emu::Api::new(emu).await;
    let path = "/calendars/primary/events";
    let (items, token) = api.list_all(path, &[("maxResults", "250")]).await;
    let token = token.expect("a sync token");
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    emu.edit(
        CAL,
        Edit::Patch(id(&items[0]), json!({"summary": "edited"})),
        false,
    )
    .await
    .expect("patch");
    emu.edit(CAL, Edit::Delete(id(&items[1])), false)
        .await
        .expect("delete");
    let (changed, token) = api.list_all(path, &[("syncToken", &token)]).await;
    let token = token.expect("a sync token");
    assert_eq!(changed.len(), 2, "an update and a deletion");

    let mut heads: HashMap<String, Value> = HashMap::new();
    let mut log = Vec::new();
    for item in &items {
        log.push(record(log.len() as u64 + 1, "created", item, None));
        heads.insert(id(item), item.clone());
    }
    for item in &changed {
        let old = heads.remove(&id(item)).expect("known");
        if item["status"] == "cancelled" {
            log.push(record(log.len() as u64 + 1, "deleted", item, Some(&old)));
        } else {
            log.push(record(log.len() as u64 + 1, "updated", item, Some(&old)));
            heads.insert(id(item), item.clone());
        }
    }

    let db = sled::open(dir.path().join("store")).expect("sled");
    let tree = |name: &str| db.open_tree(name).expect("tree");
    tree("meta")
        .insert("schema_version", &1u32.to_be_bytes())
        .expect("meta");
    let cal = calendar_key("emu", "primary");
    let state = json!({"sync_token": token, "generation": 1, "events": heads.len(),
                       "last_sync_at": null, "last_error": null});
    tree("calendars")
        .insert(&cal, serde_json::to_vec(&state).expect("json"))
        .expect("state");
    for (event_id, body) in &heads {
        let version = json!({"id": event_id, "etag": body["etag"], "sequence": body["sequence"],
                             "updated": body["updated"], "status": body["status"],
                             "generation": 1, "body": body});
        let mut key = cal.clone();
        key.extend_from_slice(event_id.as_bytes());
        tree("events")
            .insert(key, serde_json::to_vec(&version).expect("json"))
            .expect("event");
    }
    for r in &log {
        let seq = r["seq"].as_u64().expect("seq");
        tree("changes")
            .insert(seq.to_be_bytes(), serde_json::to_vec(r).expect("json"))
            .expect("record");
    }
    db.flush().expect("flush");
    log
}

/// Runs the daemon until its fail point aborts it after `batch` batches.
fn abort_after_batch(dir: &TempDir, batch: usize) {
    let failpoint = format!("abort_after_migration_batch:{batch}");
    let mut d = Daemon::spawn_with_env(
        &["run", "--config", "config.toml"],
        dir.path(),
        &[("GCAL_SYNCD_FAILPOINT", failpoint.as_str())],
    );
    assert_eq!(d.wait_exit(WAIT), None, "the fail point should stop it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_1_store_is_migrated_in_place_resumably_without_records_or_resync() {
    let (emu, dir) = calendar_of(N, "migrate").await;
    let before = schema_1_store(&emu, &dir).await;

    // Stopped in the heads (after 2 batches of 3), then in the records
    // (after the last heads, the end of the heads, and 2 records batches
    // of 3).
    abort_after_batch(&dir, 2);
    abort_after_batch(&dir, 4);

    let (mut d, api) = start(&dir);
    // Logged before the daemon says it started.
    let done = d
        .logged("store migration done")
        .expect("the migration ends");
    assert_eq!(Daemon::field(done, "bodies_not_shared"), "0", "{done}");
    wait_synced(&api).await;
    // An edit after the migration diffs against the migrated body.
    let third = before[2]["event_id"].as_str().expect("id").to_string();
    emu.edit(
        CAL,
        Edit::Patch(third.clone(), json!({"location": "Room 7"})),
        false,
    )
    .await
    .expect("patch");
    let head = before.len() as u64;
    emu::wait_until_async("the edit's record", WAIT, || async {
        let body: Value = emu::http()
            .get(format!("http://{api}/v1/changes?after={head}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (!body["changes"].as_array()?.is_empty()).then_some(())
    })
    .await;
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));

    let store = Store::open(&dir.path().join("store")).expect("store");
    let key = CalendarKey::new("emu", "primary");
    let state = store.calendar(&key).expect("state");
    assert_eq!(state.generation, 1, "the calendar was resynced");
    assert_eq!(state.events, N as u64 - 1);
    let after: Vec<Value> = records(&store)
        .iter()
        .map(|r| serde_json::to_value(r).expect("json"))
        .collect();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "records written by the migration"
    );
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old, new, "record {} changed", old["seq"]);
    }
    let edit = &after[before.len()];
    assert_eq!(
        (&edit["change"], &edit["event_id"], &edit["changed_fields"]),
        (&json!("updated"), &json!(third), &json!(["location"])),
    );
    assert_eq!(
        edit["previous"], before[2]["event"],
        "previous is the migrated body"
    );
    // One body per created record, one more per update and per deletion,
    // each stored once though heads and records share them.
    assert_eq!(
        store.check_bodies().expect("bodies"),
        BodyCheck {
            stored: N + 3,
            referenced: N + 3,
            dangling: 0,
            unreferenced: 0
        }
    );
}

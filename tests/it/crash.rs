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

fn config(dir: &TempDir, api_root: &str) {
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

fn start(dir: &TempDir) -> (Daemon, String) {
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

async fn wait_synced(api: &str) {
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
    let mut after = gcal_syncd::store::Seq::ZERO;
    loop {
        let batch = store.changes_after(after, 10_000).expect("feed");
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for c in batch {
            reported
                .entry(c.event_id.clone())
                .or_default()
                .push((format!("{:?}", c.change), c.etag.clone()));
        }
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

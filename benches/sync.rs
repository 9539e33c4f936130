//! P1 (the seed's scenario against the naive method), P3 (100k-event full
//! sync: rate and peak RSS of a real daemon process) and P2 (ping -> record
//! latency). Run: `cargo bench --bench sync`. Prints markdown rows.
//! `BENCH_WRAP=heaptrack cargo bench --bench sync p3` runs P3's daemon under
//! a wrapper command (a profiler); the rate and RSS are then the wrapper's.
//! P3 also reports CPU time per event and the store's bytes on disk per
//! event; `BENCH_P3_EVENTS=300000` changes its calendar's size.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gcal_syncd::emulator::{Edit, SERVICE_ACCOUNT as CAL};
use serde_json::{json, Value};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let only = std::env::args().nth(1).filter(|a| a.starts_with('p'));
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("p1") {
        p1().await;
    }
    if run("p2") {
        p2().await;
    }
    if run("p3") {
        p3().await;
    }
}

/// 1000 events, then 1000 single-event edits each followed by its own ping.
async fn p1() {
    let (calls, items, ours) = p1_gcal_syncd("1s").await;
    let (calls0, items0, ours0) = p1_gcal_syncd("0s").await;

    // The naive method: on every ping, list every event and compare etags.
    let emu = emulator().await;
    emu.bulk_insert(CAL, (0..1000).map(event)).expect("bulk");
    let naive = Naive::start(&emu).await;
    let ids: Vec<String> = emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();
    let (c0, i0) = list_stats(&emu);
    let t = Instant::now();
    edit_each(&emu, &ids).await;
    while naive.changes.lock().expect("lock").len() < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let complete = t.elapsed();
    while naive.handled.load(std::sync::atomic::Ordering::SeqCst) < 1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t.elapsed();
    let (c1, i1) = list_stats(&emu);
    let (naive_calls, naive_items) = (c1 - c0, i1 - i0);
    println!(
        "| P1 gcal-syncd, debounce 1s (default) | {calls} | {items} | {:.2} s |",
        ours.as_secs_f64()
    );
    println!(
        "| P1 gcal-syncd, debounce 0s | {calls0} | {items0} | {:.2} s |",
        ours0.as_secs_f64()
    );
    println!("| P1 naive: list every event on every ping | {naive_calls} | {naive_items} | {:.2} s (all pings handled after {:.2} s) |", complete.as_secs_f64(), drained.as_secs_f64());
    println!(
        "| P1 ratio naive / gcal-syncd (default) | {:.0}x | {:.0}x | |",
        naive_calls as f64 / calls.max(1) as f64,
        naive_items as f64 / items.max(1) as f64,
    );
}

/// (events.list calls, items, time to a complete feed) for gcal-syncd.
async fn p1_gcal_syncd(debounce: &str) -> (u64, u64, Duration) {
    let emu = emulator().await;
    emu.bulk_insert(CAL, (0..1000).map(event)).expect("bulk");
    let dir = temp_dir(&format!("p1-{debounce}"));
    let http = http();
    let d = daemon(&dir, &emu, debounce).await;
    wait_records(&http, &d.api, 0, 1000).await;
    wait_channel(&http, &d.api).await;
    let ids: Vec<String> = emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();
    let (calls0, items0) = list_stats(&emu);
    let t = Instant::now();
    edit_each(&emu, &ids).await;
    wait_records(&http, &d.api, 1000, 1000).await;
    let took = t.elapsed();
    // Let the passes the last pings started finish before counting.
    loop {
        let c = calendar(&http, &d.api).await;
        let pings = emu.counters();
        if c["state"] == "idle"
            && pings.pings_delivered + pings.pings_failed == pings.pings_sent.values().sum::<u64>()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a debounce that is still pending
    let (calls1, items1) = list_stats(&emu);
    d.stop.cancel();
    let _ = d.task.await;
    (calls1 - calls0, items1 - items0, took)
}

/// Edits every event once, each edit followed by its own ping.
async fn edit_each(emu: &gcal_syncd::emulator::Emulator, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        emu.edit(
            CAL,
            Edit::Patch(id.clone(), json!({"summary": format!("edit {i}")})),
            true,
        )
        .await
        .expect("edit");
    }
}

fn list_stats(emu: &gcal_syncd::emulator::Emulator) -> (u64, u64) {
    let c = emu.counters();
    (
        c.list_calls_by_calendar.get(CAL).copied().unwrap_or(0),
        c.list_items,
    )
}

/// The seed's method: a webhook receiver that lists the whole calendar on
/// every ping and diffs etags against its own map.
struct Naive {
    changes: Arc<Mutex<Vec<String>>>,
    handled: Arc<std::sync::atomic::AtomicUsize>,
}

impl Naive {
    async fn start(emu: &gcal_syncd::emulator::Emulator) -> Naive {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}/notify", listener.local_addr().expect("addr"));
        let http = http();
        let token = access_token(emu).await;
        let root = emu.api_root();
        let known: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let changes: Arc<Mutex<Vec<String>>> = Arc::default();
        // Initial state: one full listing.
        for item in list_all(&http, &root, &token).await {
            known.lock().expect("lock").insert(
                item["id"].as_str().unwrap_or("").into(),
                item["etag"].to_string(),
            );
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let handler = move |_req| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                gcal_syncd::http::empty(hyper::StatusCode::OK)
            }
        };
        tokio::spawn(gcal_syncd::http::serve(
            "naive",
            listener,
            Default::default(),
            handler,
            Default::default(),
        ));
        let handled: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (k, c, h, r, t, n) = (
            known.clone(),
            changes.clone(),
            http.clone(),
            root.clone(),
            token.clone(),
            handled.clone(),
        );
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                for item in list_all(&h, &r, &t).await {
                    let id = item["id"].as_str().unwrap_or("").to_string();
                    let etag = item["etag"].to_string();
                    let mut known = k.lock().expect("lock");
                    if known.get(&id) != Some(&etag) {
                        known.insert(id.clone(), etag);
                        c.lock().expect("lock").push(id);
                    }
                }
            }
        });
        let body = json!({"id": "naive-channel", "type": "web_hook", "address": address});
        let resp = http
            .post(format!("{root}/calendars/primary/events/watch"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("watch");
        assert!(resp.status().is_success());
        // The channel's sync message is not a change; the naive receiver
        // counts it as handled like every other ping.
        Naive { changes, handled }
    }
}

async fn list_all(http: &reqwest::Client, root: &str, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut q = vec![("maxResults", "2500".to_string())];
        if let Some(p) = &page {
            q.push(("pageToken", p.clone()));
        }
        let body: Value = http
            .get(format!("{root}/calendars/primary/events"))
            .bearer_auth(token)
            .query(&q)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        out.extend(body["items"].as_array().cloned().unwrap_or_default());
        match body["nextPageToken"].as_str() {
            Some(p) => page = Some(p.to_string()),
            None => return out,
        }
    }
}

/// Ping -> record latency over 1000 single edits (debounce 0), beside the
/// emulator's own events.list round trip.
async fn p2() {
    let emu = emulator().await;
    emu.bulk_insert(CAL, (0..1000).map(event)).expect("bulk");
    let dir = temp_dir("p2");
    let http = http();
    let d = daemon(&dir, &emu, "0s").await;
    let mut head = wait_records(&http, &d.api, 0, 1000)
        .await
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0);
    wait_channel(&http, &d.api).await;
    let ids: Vec<String> = emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();
    let mut lat = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let t = Instant::now();
        emu.edit(
            CAL,
            Edit::Patch(id.clone(), json!({"summary": format!("p2 {i}")})),
            true,
        )
        .await
        .expect("edit");
        let got = wait_records(&http, &d.api, head, 1).await;
        lat.push(t.elapsed());
        head = got
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .max()
            .unwrap_or(head);
    }
    lat.sort();
    // The emulator's own list round trip, for scale: an incremental list of one change.
    let token = access_token(&emu).await;
    let root = emu.api_root();
    let mut rtt = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let _ = http
            .get(format!("{root}/calendars/primary/events"))
            .bearer_auth(&token)
            .query(&[("maxResults", "1")])
            .send()
            .await
            .expect("list")
            .bytes()
            .await;
        rtt.push(t.elapsed());
    }
    rtt.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| P2 ping -> record (1000 edits, debounce 0s) | {:.2} ms | {:.2} ms |",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!(
        "| P2 emulator events.list round trip (maxResults=1) | {:.2} ms | {:.2} ms |",
        ms(percentile(&rtt, 0.5)),
        ms(percentile(&rtt, 0.99))
    );
    d.stop.cancel();
    let _ = d.task.await;
}

/// Full sync of 100k events by a real daemon process (release binary):
/// events/s persisted and its peak RSS.
async fn p3() {
    let emu = emulator().await;
    // BENCH_P3_EVENTS shows whether the peak grows with the calendar.
    let n: usize = std::env::var("BENCH_P3_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    emu.bulk_insert(CAL, (0..n).map(event)).expect("bulk");
    let dir = temp_dir("p3");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let api = probe.local_addr().expect("addr").to_string();
    drop(probe);
    let hook = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hook_addr = hook.local_addr().expect("addr").to_string();
    drop(hook);
    let config = write_config(&dir, &emu, &hook_addr, &api, "1s");
    let http = http();
    let t = Instant::now();
    let mut child = spawn_daemon(&config);
    loop {
        let c = calendar(&http, &api).await;
        if c["events"] == n && c["has_sync_token"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t.elapsed();
    let hwm = peak_rss(Some(child.id()));
    let cpu = cpu_seconds(child.id());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let disk = dir_bytes(&dir);
    println!(
        "| P3 full sync of {n} events (process start to stored sync token) | {:.2} s | {:.0} events/s | peak RSS {hwm} | {:.1} us CPU/event | {:.2} KB/event on disk |",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        cpu * 1e6 / n as f64,
        disk as f64 / 1024.0 / n as f64
    );
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

//! Many calendars on one daemon (issue #15): a real daemon process (the
//! release binary) follows N calendars of 10 events each in the emulator.
//! Reports the time until every calendar is synced and every channel
//! confirmed, events.list and events.watch calls per calendar, quota
//! refusals, peak and idle RSS (against a one-calendar daemon measured in
//! the same run), idle CPU, and how long `/v1/calendars` and `/metrics`
//! take to answer when idle. In a paced run (Google's default quota of
//! 600 requests a minute, in the emulator and the daemon) it also edits an
//! already synced calendar every few seconds during the start-up and
//! times each edit to its record on a long-poll (debounce 0 s).
//!
//! Run: `cargo bench --bench scale`. `BENCH_SCALE` lists the runs as
//! `calendars:lifted` or `calendars:paced` (default
//! `1000:lifted,5000:lifted,1000:paced`); `BENCH_SCALE_IDLE` the seconds of
//! idle measured (default 60); `BENCH_WRAP=heaptrack` runs each daemon
//! under that tool (the RSS and CPU are then the tool's process's).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gcal_syncd::emulator::{Edit, Emulator, QuotaKnobs, SERVICE_ACCOUNT as CAL};
use serde_json::{json, Value};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = std::env::var("BENCH_SCALE")
        .unwrap_or_else(|_| "1000:lifted,5000:lifted,1000:paced".into());
    let idle: u64 = std::env::var("BENCH_SCALE_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let base = run(1, false, idle).await;
    println!(
        "| calendars | quota | all synced | all watched (confirmed) | events.list per calendar | events.watch per calendar | quota refusals | peak RSS | idle RSS | idle RSS per calendar above 1 | idle CPU | ping -> record during start-up p50 / p99 / max | /v1/calendars, /metrics idle (size) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    print_row(&base, &base);
    for spec in runs.split(',') {
        let Some((n, mode)) = spec.split_once(':') else {
            continue;
        };
        let n: usize = n.trim().parse().expect("BENCH_SCALE: calendars:mode");
        let r = run(n, mode.trim() == "paced", idle).await;
        print_row(&r, &base);
    }
}

struct Outcome {
    calendars: usize,
    paced: bool,
    synced: Duration,
    watched: Duration,
    lists: u64,
    watches: u64,
    refusals: u64,
    peak_kb: u64,
    idle_kb: u64,
    idle_cpu: f64,
    idle_secs: u64,
    pings: Vec<Duration>,
    /// `/v1/calendars` and `/metrics`, idle: answer time and size.
    answers: [(Duration, usize); 2],
}

fn print_row(r: &Outcome, base: &Outcome) {
    let n = r.calendars as f64;
    let per_cal = if r.calendars > 1 {
        format!(
            "{:.1} KB",
            (r.idle_kb as f64 - base.idle_kb as f64) / (n - 1.0)
        )
    } else {
        "(baseline)".into()
    };
    let mut pings = r.pings.clone();
    pings.sort();
    let ping = if pings.is_empty() {
        "-".to_string()
    } else {
        format!(
            "{:.0} / {:.0} / {:.0} ms ({} edits)",
            ms(percentile(&pings, 0.5)),
            ms(percentile(&pings, 0.99)),
            ms(*pings.last().expect("non-empty")),
            pings.len()
        )
    };
    println!(
        "| {} | {} | {:.1} s | {:.1} s | {:.3} | {:.3} | {} | {:.1} MB | {:.1} MB | {per_cal} | {:.2} s CPU in {} s ({:.2}%) | {ping} | {:.0} ms ({:.1} MB), {:.0} ms ({:.1} MB) |",
        r.calendars,
        if r.paced { "600/min" } else { "lifted" },
        r.synced.as_secs_f64(),
        r.watched.as_secs_f64(),
        r.lists as f64 / n,
        r.watches as f64 / n,
        r.refusals,
        r.peak_kb as f64 / 1024.0,
        r.idle_kb as f64 / 1024.0,
        r.idle_cpu,
        r.idle_secs,
        r.idle_cpu * 100.0 / r.idle_secs as f64,
        ms(r.answers[0].0),
        r.answers[0].1 as f64 / 1e6,
        ms(r.answers[1].0),
        r.answers[1].1 as f64 / 1e6,
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(n: usize, paced: bool, idle: u64) -> Outcome {
    let emu = emulator().await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = emu
            .create_calendar(CAL, None, &format!("room {i}"), "UTC")
            .expect("calendar");
        emu.bulk_insert(&id, (0..10).map(event)).expect("events");
        ids.push(id);
    }
    let per_minute = if paced { 600 } else { 1_000_000 };
    emu.set_quota(QuotaKnobs {
        per_user_per_minute: per_minute,
        per_project_per_minute: per_minute.max(10_000),
        ..Default::default()
    });
    let dir = temp_dir(&format!("scale-{n}"));
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let (hook, api) = (free(), free());
    let calendars = format!(
        "[{}]",
        ids.iter()
            .map(|id| format!("{id:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::write(dir.join("sa.json"), emu.service_account_json()).expect("sa");
    let text = gcal_syncd::config::ConfigText::new("bench", "sa.json")
        .log_level("error")
        .google(&emu.api_root())
        .hook(&hook)
        .api(&api)
        .sync("poll_interval", "\"1h\"")
        .sync("debounce", "\"0s\"")
        .calendars(&calendars)
        .tail(&format!("requests_per_minute = {per_minute}\n"))
        .render();
    let config = dir.join("config.toml");
    std::fs::write(&config, text).expect("config");
    let http = http();
    let before = emu.counters();
    let t = Instant::now();
    let mut child = spawn_daemon(&config);
    let (mut synced, mut watched) = (None, None);
    let mut pings = Vec::new();
    let mut next_edit = Instant::now();
    while synced.is_none() || watched.is_none() {
        let all = calendars_of(&http, &api).await;
        let count = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|c| f(c)).count();
        let done = count(&|c| c["has_sync_token"] == true && c["state"] == "idle");
        let confirmed = count(&|c| c["channel"]["confirmed"] == true);
        if all.len() == n && done == n && synced.is_none() {
            synced = Some(t.elapsed());
        }
        if all.len() == n && confirmed == n && watched.is_none() {
            watched = Some(t.elapsed());
        }
        // While the start-up runs: an edit on a calendar already synced,
        // timed to its record.
        if paced && synced.is_none() && Instant::now() >= next_edit {
            let ready = all.iter().find(|c| {
                c["has_sync_token"] == true
                    && c["state"] == "idle"
                    && c["channel"]["confirmed"] == true
            });
            if let Some(c) = ready {
                let cal = c["calendar_id"].as_str().unwrap_or_default().to_string();
                pings.push(edit_and_wait(&emu, &http, &api, &cal, pings.len()).await);
                next_edit = Instant::now() + Duration::from_secs(5);
            }
        }
        // A paced start-up takes minutes: reading the whole /v1/calendars
        // (3.6 MB and ~130 ms of the daemon's CPU at 10,000 calendars) four
        // times a second would load the daemon it measures.
        let every = if paced { 2000 } else { 250 };
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
    let after = emu.counters();
    let calls = |m: &str| {
        after.calls.get(m).copied().unwrap_or(0) - before.calls.get(m).copied().unwrap_or(0)
    };
    let lists = calls("events.list") - pings.len() as u64;
    let watches = calls("events.watch");
    let peak_kb = status_kb(child.id(), "VmHWM:");
    // Idle: nothing changes; the daemon only waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpu_seconds(child.id());
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let idle_cpu = cpu_seconds(child.id()) - cpu0;
    let idle_kb = status_kb(child.id(), "VmRSS:");
    let answers = answer_times(&http, &api).await;
    let refusals = scrape_refusals(&http, &api).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        calendars: n,
        paced,
        synced: synced.unwrap_or_default(),
        watched: watched.unwrap_or_default(),
        lists,
        watches,
        refusals,
        peak_kb,
        idle_kb,
        idle_cpu,
        idle_secs: idle,
        pings,
        answers,
    }
}

/// The median of three idle answers of `/v1/calendars` and of `/metrics`,
/// each read whole, and the size of the last ones.
async fn answer_times(http: &reqwest::Client, api: &str) -> [(Duration, usize); 2] {
    let mut out = [(Duration::ZERO, 0); 2];
    for (slot, path) in out.iter_mut().zip(["/v1/calendars", "/metrics"]) {
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let body = match http.get(format!("http://{api}{path}")).send().await {
                Ok(r) => r.bytes().await.map(|b| b.len()).unwrap_or(0),
                Err(_) => 0,
            };
            times.push(t.elapsed());
            slot.1 = body;
        }
        times.sort();
        slot.0 = times[1];
    }
    out
}

async fn calendars_of(http: &reqwest::Client, api: &str) -> Vec<Value> {
    match http.get(format!("http://{api}/v1/calendars")).send().await {
        Ok(r) => r.json::<Value>().await.unwrap_or_default()["calendars"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Edits an event of `cal` with its ping and waits for the record.
async fn edit_and_wait(
    emu: &Emulator,
    http: &reqwest::Client,
    api: &str,
    cal: &str,
    i: usize,
) -> Duration {
    let q: String = form_urlencoded::byte_serialize(cal.as_bytes()).collect();
    // The cursor after the calendar's records so far. A filtered read
    // answers `next`, the last seq it looked at (at most `limit` of them):
    // follow it to the end of the feed.
    let mut head = 0;
    loop {
        let page = get_json(
            http,
            &format!("http://{api}/v1/changes?after={head}&calendar_id={q}&limit=10000"),
        )
        .await;
        let next = page["next"].as_u64().unwrap_or(head);
        if next == head {
            break;
        }
        head = next;
    }
    let id = emu.etags(cal).into_iter().next().expect("an event").0;
    let t = Instant::now();
    emu.edit(
        cal,
        Edit::Patch(id, json!({"summary": format!("edit {i}")})),
        true,
    )
    .await
    .expect("edit");
    loop {
        let url = format!("http://{api}/v1/changes?after={head}&calendar_id={q}&wait=30");
        let body = get_json(http, &url).await;
        if body["changes"].as_array().is_some_and(|c| !c.is_empty()) {
            return t.elapsed();
        }
        // Records of other calendars came: go on after them.
        head = body["next"].as_u64().unwrap_or(head);
    }
}

async fn scrape_refusals(http: &reqwest::Client, api: &str) -> u64 {
    let text = match http.get(format!("http://{api}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return u64::MAX,
    };
    text.lines()
        .filter(|l| {
            l.starts_with("gcal_syncd_google_errors_total") && l.contains("RateLimitExceeded")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

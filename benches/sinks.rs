//! Push delivery (issue #14): how fast a sink drains a backlog, compared
//! with a pull reader of `/v1/changes` in the same run; ping-to-webhook
//! latency against ping-to-record (P2's measure) in the same run; and 1000
//! SSE clients on one daemon. Run: `cargo bench --bench sinks`. The NATS
//! row needs `nats-server` on PATH (skipped, and said so, without it).
//! `BENCH_SINK_EVENTS` sets the backlog (default 50000), `BENCH_SINK_BATCH`
//! the webhook's batch_max (default 100).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gcal_syncd::emulator::{Edit, Emulator, SERVICE_ACCOUNT as CAL};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: u64 = std::env::var("BENCH_SINK_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let emu = emulator().await;
    emu.bulk_insert(CAL, (0..n as usize).map(event))
        .expect("bulk");
    let dir = temp_dir("sinks");
    std::fs::write(dir.join("webhook.secret"), SECRET).expect("secret");
    let http = http();

    // The backlog, written by a daemon without sinks; then the pull
    // baseline: one reader paging through /v1/changes.
    let d = daemon_with(&dir, &emu, "0s", "").await;
    wait_records_count(&http, &d.api, n).await;
    let t = Instant::now();
    let mut cursor = 0;
    while cursor < n {
        let body: Value = http
            .get(format!(
                "http://{}/v1/changes?after={cursor}&limit=1000",
                d.api
            ))
            .send()
            .await
            .expect("pull")
            .json()
            .await
            .expect("json");
        cursor = body["next"].as_u64().expect("next");
    }
    let pull = t.elapsed();
    d.stop().await;
    println!(
        "| pull reader, /v1/changes limit=1000 ({n} records) | {:.2} s | {:.0} changes/s |",
        pull.as_secs_f64(),
        n as f64 / pull.as_secs_f64()
    );

    // Webhook: a receiver that answers 204 at once.
    let stop = CancellationToken::new();
    let (receiver, seen) = receiver(stop.clone()).await;
    let batch: u64 = std::env::var("BENCH_SINK_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let sink = format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{receiver}\"\nsecret_file = \"webhook.secret\"\nbatch_max = {batch}\n"
    );
    let t = Instant::now();
    let d = daemon_with(&dir, &emu, "0s", &sink).await;
    let mut rx = seen.clone();
    rx.wait_for(|&s| s >= n).await.expect("delivered");
    let push = t.elapsed();
    println!(
        "| webhook sink, batch_max {batch} ({n} records, daemon start to last acknowledged) | {:.2} s | {:.0} changes/s | {:.2}x the pull reader |",
        push.as_secs_f64(),
        n as f64 / push.as_secs_f64(),
        pull.as_secs_f64() / push.as_secs_f64()
    );

    latency(&emu, &http, &d.api, &seen).await;
    sse(&emu, &http, &d.api, None).await;
    d.stop().await;
    // The same with the daemon (the release binary) in a process of its
    // own, as deployed: the clients' reads are no longer on its runtime
    // (the machine's two cores are still shared with them).
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let (hook, api) = (free(), free());
    let mut child = spawn_daemon(&write_config(&dir, &emu, &hook, &api, "0s"));
    wait_channel(&http, &api).await;
    sse(&emu, &http, &api, Some(child.id())).await;
    let _ = child.kill();
    let _ = child.wait();
    nats(&dir, &emu, &http, n).await;
    stop.cancel();
}

/// 300 edits one after another, each with its ping: the time to the record
/// on a long-poll, and to the webhook POST that carries it.
async fn latency(emu: &Emulator, http: &reqwest::Client, api: &str, seen: &watch::Receiver<u64>) {
    wait_channel(http, api).await;
    let ids: Vec<String> = emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();
    let mut head = *seen.borrow();
    let (mut to_record, mut to_webhook) = (Vec::new(), Vec::new());
    for (i, id) in ids.iter().take(300).enumerate() {
        let mut rx = seen.clone();
        let poll = {
            let (http, api) = (http.clone(), api.to_string());
            tokio::spawn(async move {
                let got = wait_records(&http, &api, head, 1).await;
                (Instant::now(), got)
            })
        };
        let t = Instant::now();
        emu.edit(
            CAL,
            Edit::Patch(id.clone(), json!({"summary": format!("latency {i}")})),
            true,
        )
        .await
        .expect("edit");
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|&s| s > head))
            .await
            .expect("no webhook within 30 s")
            .expect("webhook");
        to_webhook.push(t.elapsed());
        let (at, _) = tokio::time::timeout(Duration::from_secs(30), poll)
            .await
            .expect("no record within 30 s")
            .expect("poll");
        to_record.push(at.saturating_duration_since(t));
        head = *rx.borrow();
    }
    to_record.sort();
    to_webhook.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| ping -> record on a long-poll (P2's measure, 300 edits, debounce 0s) | p50 {:.2} ms | p99 {:.2} ms |",
        ms(percentile(&to_record, 0.5)),
        ms(percentile(&to_record, 0.99))
    );
    println!(
        "| ping -> webhook POST received (same edits) | p50 {:.2} ms | p99 {:.2} ms |",
        ms(percentile(&to_webhook, 0.5)),
        ms(percentile(&to_webhook, 0.99))
    );
}

/// 1000 SSE clients (plain sockets) on one daemon, five edits: the time
/// from an edit to each client reading its record, and the daemon's RSS per
/// client (of this process, daemon and clients, when `pid` is None).
async fn sse(emu: &Emulator, http: &reqwest::Client, api: &str, pid: Option<u32>) {
    const CLIENTS: usize = 1000;
    const ROUNDS: usize = 5;
    let head = sinks(http, api).await["feed_head"].as_u64().expect("head");
    let rss = || pid.map_or_else(rss_kb, |p| status_kb(p, "VmRSS:"));
    let before = rss();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut s = tokio::net::TcpStream::connect(api).await.expect("connect");
        s.write_all(
            format!("GET /v1/changes/stream?after={head} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
        clients.push(s);
    }
    // Every stream has answered its headers.
    let mut ready = Vec::with_capacity(CLIENTS);
    for mut s in clients {
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let k = s.read(&mut chunk).await.expect("read");
            assert!(k > 0, "stream closed");
            buf.extend_from_slice(&chunk[..k]);
        }
        ready.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss();
    let ids: Vec<String> = emu.etags(CAL).into_iter().map(|(id, _, _)| id).collect();
    let mut lat = Vec::with_capacity(CLIENTS * ROUNDS);
    let mut slowest = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let readers: Vec<_> = ready
            .drain(..)
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while !buf.windows(4).any(|w| w == b"id: ") {
                        let mut chunk = [0u8; 4096];
                        let k = s.read(&mut chunk).await.expect("read");
                        assert!(k > 0, "stream closed");
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    (Instant::now(), s)
                })
            })
            .collect();
        emu.edit(
            CAL,
            Edit::Patch(ids[0].clone(), json!({"summary": format!("sse {round}")})),
            true,
        )
        .await
        .expect("edit");
        for r in readers {
            let (at, s) = tokio::time::timeout(Duration::from_secs(30), r)
                .await
                .expect("an SSE client got nothing within 30 s")
                .expect("reader");
            lat.push(at.saturating_duration_since(t));
            ready.push(s);
        }
        slowest.push(lat.iter().rev().take(CLIENTS).max().copied());
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let whose = match pid {
        None => "daemon in this process, with the clients",
        Some(_) => "daemon in its own process",
    };
    println!(
        "| {CLIENTS} SSE clients ({whose}), {ROUNDS} edits: edit -> each client has the record | p50 {:.2} ms | p99 {:.2} ms | max {:.2} ms | slowest client per edit {} ms | RSS +{:.1} KB per client |",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        (slowest.iter().flatten())
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        after.saturating_sub(before) as f64 / CLIENTS as f64
    );
}

/// The same backlog published to NATS JetStream with acks.
async fn nats(dir: &Path, emu: &Emulator, http: &reqwest::Client, n: u64) {
    let server = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut server) = server else {
        println!("| NATS sink | skipped: no nats-server on PATH |");
        return;
    };
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("Listening for client connections on ")
                .nth(1)
                .map(|a| format!("nats://{}", a.trim()))
        })
        .expect("nats-server address");
    // Keep reading its log: a closed pipe would kill it at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "GCAL".into(),
        subjects: vec!["gcal.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let sink = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{url}\"\nstream = \"GCAL\"\nsubject_prefix = \"gcal\"\nbatch_max = 100\n"
    );
    let t = Instant::now();
    let d = daemon_with(dir, emu, "0s", &sink).await;
    loop {
        if sinks(http, &d.api).await["sinks"][0]["cursor"]
            .as_u64()
            .unwrap_or(0)
            >= n
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    println!(
        "| NATS JetStream sink, batch_max 100, each publish acknowledged ({n} records) | {:.2} s | {:.0} changes/s |",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    d.stop().await;
    let _ = server.kill();
    let _ = server.wait();
}

/// A webhook receiver answering 204 at once; the watch holds the highest
/// seq received.
async fn receiver(stop: CancellationToken) -> (String, watch::Receiver<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/changes", listener.local_addr().expect("addr"));
    let (tx, rx) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            use http_body_util::BodyExt;
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let last = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["changes"].as_array()?.last()?["seq"].as_u64())
                .unwrap_or(0);
            tx.send_modify(|s| *s = (*s).max(last));
            gcal_syncd::http::empty(hyper::StatusCode::NO_CONTENT)
        }
    };
    tokio::spawn(gcal_syncd::http::serve(
        "bench receiver",
        listener,
        gcal_syncd::http::Limits::API,
        handler,
        stop,
    ));
    (url, rx)
}

/// The daemon's `/v1/sinks` answer (it also says the feed's head).
async fn sinks(http: &reqwest::Client, api: &str) -> Value {
    http.get(format!("http://{api}/v1/sinks"))
        .send()
        .await
        .expect("sinks")
        .json()
        .await
        .expect("json")
}

/// Waits until the feed holds `n` records.
async fn wait_records_count(http: &reqwest::Client, api: &str, n: u64) {
    while sinks(http, api).await["feed_head"].as_u64().unwrap_or(0) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! P4: how many pings per second the daemon's hook answers, and at what
//! latency, beside a bare hyper server that answers 200 to everything,
//! both measured here with the same load generator (keep-alive connections
//! on loopback) while a full sync of a big calendar runs in the daemon.
//! Run: `cargo bench --bench hook`. Prints markdown rows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gcal_syncd::emulator::SERVICE_ACCOUNT as CAL;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: usize = 16;
const DURATION: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // Bare server: 200 to everything, on the same HTTP stack the hook uses.
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bare_addr = bare.local_addr().expect("addr").to_string();
    let handler = |_req| async { gcal_syncd::http::empty(hyper::StatusCode::OK) };
    tokio::spawn(gcal_syncd::http::serve(
        "bare",
        bare,
        Default::default(),
        handler,
        Default::default(),
    ));

    // The daemon, with a live channel, a full sync of 50k events running.
    let emu = emulator().await;
    let dir = temp_dir("p4");
    let http = http();
    let d = daemon(&dir, &emu, "1s").await;
    wait_channel(&http, &d.api).await;
    let channel = calendar(&http, &d.api).await["channel"]["id"]
        .as_str()
        .expect("channel")
        .to_string();
    let token = emu
        .channel_token(&channel)
        .expect("the emulator knows the channel's token");
    emu.bulk_insert(CAL, (0..50_000).map(event)).expect("bulk");
    emu.invalidate_sync_tokens(CAL)
        .expect("force a full resync");
    let _ = emu
        .edit(CAL, gcal_syncd::emulator::Edit::Insert(event(0)), true)
        .await;

    let ping = format!(
        "POST /gcal/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Goog-Channel-ID: {channel}\r\nX-Goog-Channel-Token: {token}\r\nX-Goog-Resource-State: exists\r\nX-Goog-Message-Number: 9\r\nX-Goog-Resource-ID: r\r\n\r\n"
    );
    let (bare_rps, bare_lat) = load(
        &bare_addr,
        "POST /gcal/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let syncing = calendar(&http, &d.api).await["state"].clone();
    let (hook_rps, hook_lat) = load(&d.hook, &ping).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| P4 bare hyper server (200 to all) | {bare_rps:.0} req/s | {:.2} ms | {:.2} ms |",
        ms(percentile(&bare_lat, 0.5)),
        ms(percentile(&bare_lat, 0.99))
    );
    println!("| P4 gcal-syncd hook, valid pings, daemon state {syncing} | {hook_rps:.0} req/s | {:.2} ms | {:.2} ms |", ms(percentile(&hook_lat, 0.5)), ms(percentile(&hook_lat, 0.99)));
    println!(
        "| P4 ratio hook / bare | {:.0}% | | |",
        100.0 * hook_rps / bare_rps
    );
    d.stop.cancel();
    let _ = d.task.await;
}

/// CONNECTIONS keep-alive connections sending `request` back to back for
/// DURATION; returns requests/s and sorted latencies.
async fn load(addr: &str, request: &str) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + DURATION;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (addr, req) = (addr.to_string(), request.as_bytes().to_vec());
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let mut lat = Vec::new();
            let mut buf = vec![0u8; 4096];
            while Instant::now() < deadline {
                let t = Instant::now();
                s.write_all(&req).await.expect("write");
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.expect("read");
                    assert!(n > 0, "connection closed");
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                assert!(
                    got.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&got)
                );
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    all.sort();
    (all.len() as f64 / DURATION.as_secs_f64(), all)
}

//! What a held connection costs: the daemon's resident memory with N
//! slow/idle sockets on the hook and N pending long-polls on the API, a
//! genuine ping's latency while they are held, and whether the hook's
//! header-read timeout closes them. Baseline: the same daemon with none.
//! Run: `cargo bench --bench listeners`. Prints markdown rows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELD: usize = 4000;
const POLLS: usize = 1000;

/// RSS once it stops moving (the server accepts the sockets in the
/// background): the lowest of a few samples a short while apart, taken
/// after two equal readings.
async fn settled_rss() -> u64 {
    let mut last = rss_kb();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss_kb();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// `n` plain blocking sockets (an fd each, no user-space memory on this
/// side, so the RSS deltas are the daemon's), each having sent `prefix`.
async fn hold(addr: &str, n: usize, prefix: &str) -> Vec<std::net::TcpStream> {
    let (addr, prefix) = (addr.to_string(), prefix.to_string());
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                if !prefix.is_empty() {
                    std::io::Write::write_all(&mut s, prefix.as_bytes()).expect("write");
                }
                s
            })
            .collect()
    })
    .await
    .expect("connect task")
}

async fn answer_ms(addr: &str, request: &str) -> f64 {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "no answer");
    t.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let emu = emulator().await;
    let dir = temp_dir("listeners");
    let http = http();
    let d = daemon(&dir, &emu, "0s").await;
    wait_channel(&http, &d.api).await;
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Warm up the paths measured below.
    let _ = answer_ms(&d.hook, health).await;
    let _ = answer_ms(&d.api, health).await;

    let base = settled_rss().await;
    let base_ms = answer_ms(&d.hook, health).await;
    let mut held = hold(&d.hook, HELD / 2, "").await;
    let with_idle = settled_rss().await;
    held.extend(
        hold(
            &d.hook,
            HELD / 2,
            "POST /gcal/notify HTTP/1.1\r\nHost: x\r\n",
        )
        .await,
    );
    let with_held = settled_rss().await;
    let held_ms = answer_ms(&d.hook, health).await;
    let kb_each = |from: u64, to: u64, n: usize| to.saturating_sub(from) as f64 / n as f64;
    let per_idle = kb_each(base, with_idle, HELD / 2);
    let per_slow = kb_each(with_idle, with_held, HELD / 2);

    let head = reqwest::get(format!("http://{}/healthz", d.api))
        .await
        .expect("healthz")
        .json::<serde_json::Value>()
        .await
        .expect("json")["feed_head"]
        .as_u64()
        .unwrap_or(0);
    // Measured while the hook's sockets are still held, so that no memory
    // they freed is reused and the delta is the long-polls' own.
    let polls = hold(
        &d.api,
        POLLS,
        &format!("GET /v1/changes?after={head}&wait=60 HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    let with_polls = settled_rss().await;
    let polls_ms = answer_ms(&d.api, health).await;
    let per_poll = kb_each(with_held, with_polls, POLLS);

    // The hook's 5 s header-read timeout closes every one of its sockets.
    let t = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        for mut s in held {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut b = [0u8; 64];
            if std::io::Read::read(&mut s, &mut b).is_ok() {
                closed += 1;
            }
        }
        closed
    })
    .await
    .expect("read task");
    let closed_after = t.elapsed().as_secs_f64();
    drop(polls);

    println!(
        "| listeners: daemon RSS, nothing held | {} KB | hook /healthz {base_ms:.2} ms |",
        base
    );
    println!(
        "| listeners: {} idle sockets on the hook (sent nothing) | +{} KB, **{per_idle:.1} KB per connection** | |",
        HELD / 2,
        with_idle.saturating_sub(base)
    );
    println!(
        "| listeners: {} slow sockets on the hook (a partial header) | +{} KB, **{per_slow:.1} KB per connection** | with all {HELD} held, a new request answered in {held_ms:.2} ms |",
        HELD / 2,
        with_held.saturating_sub(with_idle)
    );
    println!(
        "| listeners: of those, closed by the hook's header-read timeout | {closed} of {HELD} | all within {closed_after:.1} s |"
    );
    println!(
        "| listeners: {POLLS} pending long-polls (wait=60) on the API | +{} KB, **{per_poll:.1} KB per long-poll** | /healthz answered in {polls_ms:.2} ms |",
        with_polls.saturating_sub(with_held)
    );
    d.stop.cancel();
    let _ = d.task.await;
}

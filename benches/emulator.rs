//! Emulator capacity: how fast it loads a big calendar and serves a full
//! listing of it over loopback HTTP. Run: `cargo bench --bench emulator`.
//! Prints a markdown table for BENCHMARKS.md.

mod common;

use std::time::Instant;

use gcal_syncd::emulator::{Emulator, Options, SERVICE_ACCOUNT};
use serde_json::Value;

const EVENTS: usize = 100_000;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    gcal_syncd::tls::ensure_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let emu = Emulator::start(
        listener,
        Options {
            allow_http: true,
            ..Default::default()
        },
    )
    .await
    .expect("start");

    let t = Instant::now();
    emu.bulk_insert(SERVICE_ACCOUNT, (0..EVENTS).map(common::event))
        .expect("load");
    let load = t.elapsed();

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let token = common::access_token(&emu).await;
    for parse in [false, true] {
        let t = Instant::now();
        let (listed, pages) = list_all(&emu, &http, &token, parse).await;
        let list = t.elapsed();
        assert_eq!(listed, EVENTS);
        let how = if parse {
            "client parses each page into serde_json::Value"
        } else {
            "client reads raw bytes"
        };
        println!(
            "| emulator: full list over HTTP, {pages} pages of 2500 ({how}) | {:.2} s | {:.0} events/s |",
            list.as_secs_f64(),
            EVENTS as f64 / list.as_secs_f64()
        );
    }
    println!(
        "| emulator: bulk load {EVENTS} events (in-process) | {:.2} s | {:.0} events/s |",
        load.as_secs_f64(),
        EVENTS as f64 / load.as_secs_f64()
    );
    emu.shutdown().await;
}

/// Pages through the calendar; returns (events listed, pages).
async fn list_all(
    emu: &Emulator,
    http: &reqwest::Client,
    token: &str,
    parse: bool,
) -> (usize, usize) {
    let (mut listed, mut pages, mut page) = (0usize, 0usize, None::<String>);
    loop {
        let mut q = vec![("maxResults", "2500".to_string())];
        if let Some(p) = &page {
            q.push(("pageToken", p.clone()));
        }
        let resp = http
            .get(format!("{}/calendars/primary/events", emu.api_root()))
            .bearer_auth(token)
            .query(&q)
            .send()
            .await
            .expect("list");
        let bytes = resp.bytes().await.expect("body");
        pages += 1;
        let next = if parse {
            let body: Value = serde_json::from_slice(&bytes).expect("json");
            listed += body["items"].as_array().map_or(0, Vec::len);
            body["nextPageToken"].as_str().map(String::from)
        } else {
            let text = std::str::from_utf8(&bytes).expect("utf8");
            listed += text.matches("\"kind\":\"calendar#event\"").count();
            text.split("\"nextPageToken\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(String::from)
        };
        match next {
            Some(p) => page = Some(p),
            None => return (listed, pages),
        }
    }
}

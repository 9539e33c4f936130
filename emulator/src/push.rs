//! Delivery of push notifications, in a task of its own and never inside
//! the request that made the change: POST, empty body, Google's headers,
//! retries of 500/502/503/504 with doubling backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::channels::Delivery;
use super::world::World;

/// Takes deliveries from the world's outbox until `stop`. Deliveries to one
/// channel go out in order (the `sync` message first), through one worker
/// per channel; with the reorder knob each is sent on its own and may
/// overtake the others.
pub(super) async fn run(
    world: Arc<Mutex<World>>,
    mut outbox: mpsc::UnboundedReceiver<Delivery>,
    client: reqwest::Client,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut workers: HashMap<String, mpsc::UnboundedSender<Delivery>> = HashMap::new();
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return,
            d = outbox.recv() => match d { Some(d) => d, None => return },
        };
        if !delivery.ordered {
            let (world, client, stop) = (world.clone(), client.clone(), stop.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = deliver(&world, &client, delivery) => {}
                }
            });
            continue;
        }
        let worker = workers
            .entry(delivery.channel_id.clone())
            .or_insert_with(|| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
                let (world, client, stop) = (world.clone(), client.clone(), stop.clone());
                tasks.spawn(async move {
                    loop {
                        let d = tokio::select! {
                            _ = stop.cancelled() => return,
                            d = rx.recv() => match d { Some(d) => d, None => return },
                        };
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = deliver(&world, &client, d) => {}
                        }
                    }
                });
                tx
            });
        let _ = worker.send(delivery);
    }
}

/// Sends one notification (after its delay), retrying server errors.
pub(super) async fn deliver(world: &Mutex<World>, client: &reqwest::Client, d: Delivery) {
    tokio::time::sleep(d.delay).await;
    let (retries, base) = match world.lock() {
        Ok(w) => (w.push.retries, Duration::from_millis(w.push.retry_base_ms)),
        Err(_) => return,
    };
    let mut outcome = false;
    for attempt in 0..=retries {
        match send(client, &d).await {
            Ok(200 | 201 | 202 | 204 | 102) => {
                outcome = true;
                break;
            }
            Ok(500 | 502 | 503 | 504) if attempt < retries => {
                tokio::time::sleep(base * 2u32.pow(attempt)).await
            }
            _ => break,
        }
    }
    if let Ok(mut w) = world.lock() {
        if outcome {
            w.counters.pings_delivered += 1;
        } else {
            w.counters.pings_failed += 1;
        }
    }
}

async fn send(client: &reqwest::Client, d: &Delivery) -> Result<u16, reqwest::Error> {
    let expiration = Utc
        .timestamp_millis_opt(d.expiration_ms)
        .single()
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    let mut req = client
        .post(&d.address)
        .header("User-Agent", "APIs-Google")
        .header("Content-Type", "application/json; utf-8")
        .header("Content-Length", "0")
        .header("X-Goog-Channel-ID", &d.channel_id)
        .header("X-Goog-Channel-Expiration", expiration)
        .header("X-Goog-Message-Number", d.number.to_string())
        .header("X-Goog-Resource-ID", &d.resource_id)
        .header("X-Goog-Resource-URI", &d.resource_uri)
        .header("X-Goog-Resource-State", d.state);
    if let Some(t) = &d.token {
        req = req.header("X-Goog-Channel-Token", t);
    }
    Ok(req.send().await?.status().as_u16())
}

/// The HTTP client of the delivery task: no proxy, bounded time, and
/// title-case header names on the wire (`X-Goog-Channel-Id`), so that
/// receivers that match header names case-sensitively fail in tests.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_title_case_headers()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

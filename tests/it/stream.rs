//! `GET /v1/changes/stream`: Server-Sent Events read by a plain HTTP
//! client, which disconnects and resumes with `Last-Event-ID` without
//! losing or repeating a record.

use std::time::Duration;

use gcal_syncd::emulator::Edit;
use serde_json::Value;

use crate::emu::event;
use crate::harness::{last_seq, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

/// An open event stream and what was read of it.
struct Events {
    resp: reqwest::Response,
    text: String,
}

impl Events {
    async fn open(h: &Harness, query: &str, last_event_id: Option<u64>) -> Events {
        let mut req =
            reqwest::Client::new().get(format!("http://{}/v1/changes/stream{query}", h.api));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("stream");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        Events {
            resp,
            text: String::new(),
        }
    }

    /// The next `n` events: (id, record).
    async fn next(&mut self, n: usize) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .and_then(|v| v.parse().ok());
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if let Some(id) = id {
                    let record = serde_json::from_str(&data.join("\n")).expect("data is a record");
                    out.push((id, record));
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("an event in time")
                .expect("read")
                .expect("the stream stays open");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
        out
    }
}

async fn insert(h: &Harness, summary: &str) {
    h.emu
        .edit(CAL, Edit::Insert(event(summary, 2)), true)
        .await
        .expect("insert");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_with_last_event_id_without_loss_or_duplicates() {
    let h = Harness::start("sse", Setup::default()).await;
    for i in 0..3 {
        insert(&h, &format!("before {i}")).await;
    }
    let first = h.wait_changes("3 records", 0, WAIT, |c| c.len() >= 3).await;

    let mut stream = Events::open(&h, "?after=0", None).await;
    let got = stream.next(3).await;
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        got[2].1, first[2],
        "the data is the record /v1/changes serves"
    );
    // Live: a record made while connected arrives.
    insert(&h, "live").await;
    let live = stream.next(1).await;
    assert_eq!(live[0].0, 4);
    assert_eq!(live[0].1["event"]["summary"], "live");
    drop(stream);

    // Made while the client is away, then resumed from the last id seen.
    insert(&h, "away 1").await;
    insert(&h, "away 2").await;
    let head = last_seq(&h.wait_changes("2 more", 4, WAIT, |c| c.len() >= 2).await);
    let mut resumed = Events::open(&h, "?after=0", Some(4)).await;
    let got = resumed.next(2).await;
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [5, head]);
    let mut summaries: Vec<&str> = got
        .iter()
        .filter_map(|(_, r)| r["event"]["summary"].as_str())
        .collect();
    summaries.sort(); // one pass may list them in either order
    assert_eq!(summaries, ["away 1", "away 2"]);

    // Its parameters are checked as /v1/changes's are.
    let (status, body) = h.get("/v1/changes/stream?after=0&after=1").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_clients_at_one_cursor_each_get_every_record_once_in_order() {
    let h = Harness::start("stream-many", Setup::default()).await;
    insert(&h, "first").await;
    let head = last_seq(&h.wait_changes("a record", 0, WAIT, |c| !c.is_empty()).await);
    // Clients that share what was read for their cursor, one that starts
    // earlier, and a filtered one (which reads for itself).
    let mut same = Vec::new();
    for _ in 0..5 {
        same.push(Events::open(&h, &format!("?after={head}"), None).await);
    }
    let mut early = Events::open(&h, "?after=0", None).await;
    let mut filtered = Events::open(&h, "?calendar_id=primary", None).await;
    for i in 0..6 {
        insert(&h, &format!("burst {i}")).await;
    }
    let feed = h.wait_changes("6 more", head, WAIT, |c| c.len() >= 6).await;
    let want: Vec<u64> = feed.iter().filter_map(|c| c["seq"].as_u64()).collect();
    for client in &mut same {
        let got: Vec<u64> = client
            .next(want.len())
            .await
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got, want);
    }
    let all: Vec<u64> = (1..=head).chain(want.iter().copied()).collect();
    for client in [&mut early, &mut filtered] {
        let got: Vec<(u64, Value)> = client.next(all.len()).await;
        assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), all);
        assert!(got.iter().all(|(id, r)| r["seq"] == *id));
    }
}

//! `GET /v1/changes/stream`: the feed as Server-Sent Events. One event per
//! record (`id: <seq>`, `data: <record JSON>`), from `after=` or the
//! `Last-Event-ID` a reconnecting `EventSource` sends, with the same
//! filters as `/v1/changes`; a comment every [`KEEP_ALIVE`] while nothing
//! happens, so that proxies keep the connection and the client notices a
//! dead one. Only published (durable) records are sent.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::query::ChangesQuery;
use super::Api;
use crate::http::{self, Response};
use crate::store::{ChangeRecord, FeedRead, Seq};

/// How often a comment is sent on an idle stream.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Records read per turn.
const BATCH: usize = 100;

/// The last events text read for an unfiltered stream: its cursor, the
/// seq it reaches, and the text. When a change lands, every stream that
/// followed the feed to the same cursor wants exactly this text: the first
/// one reads and encodes it, the others share it, so a change costs one
/// read however many clients follow the stream. Records never change, so a
/// text stays right for its cursor.
#[derive(Clone, Default)]
pub(super) struct Recent(Arc<Mutex<Option<(Seq, Seq, Bytes)>>>);

impl Recent {
    fn get(&self, cursor: Seq) -> Option<(Seq, Bytes)> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref()
            .filter(|(from, _, _)| *from == cursor)
            .map(|(_, through, text)| (*through, text.clone()))
    }

    fn put(&self, cursor: Seq, through: Seq, text: Bytes) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((cursor, through, text));
    }
}

/// Starts the stream for a request whose cursor was checked (not behind
/// retention); `slot` is held while it runs.
pub(super) fn start(api: Api, q: ChangesQuery, slot: OwnedSemaphorePermit) -> Response {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _slot = slot;
        run(api, q, tx).await;
    });
    let mut resp = http::stream(rx);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn run(api: Api, q: ChangesQuery, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    let send = |text: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(text)).await.is_ok() }
    };
    // The retry delay a browser uses to reconnect, and a first byte.
    if !send(Bytes::from_static(b"retry: 2000\n: gcal-syncd feed\n\n")).await {
        return;
    }
    let mut cursor = q.after;
    let mut heads = api.feed.subscribe();
    let shared = q.filter.is_empty();
    loop {
        let head = *heads.borrow_and_update();
        if head > cursor {
            if let Some((through, text)) = shared.then(|| api.recent.get(cursor)).flatten() {
                if through <= head {
                    cursor = through;
                    if !send(text).await {
                        return;
                    }
                    continue;
                }
            }
            let from = cursor;
            let text = match api.store.read_feed(cursor, head, BATCH, &q.filter) {
                Ok(FeedRead::Gone(pruned)) => {
                    // The reader fell behind retention while connected.
                    let _ = send(Bytes::from(format!(
                        "event: gone\ndata: {{\"pruned_through\":{pruned}}}\n\n"
                    )))
                    .await;
                    return;
                }
                Ok(FeedRead::Records(records, through)) => {
                    cursor = through;
                    let text = Bytes::from(events(&records));
                    if shared {
                        api.recent.put(from, through, text.clone());
                    }
                    text
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change stream cut: cannot read the feed");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if !text.is_empty() && !send(text).await {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = heads.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(KEEP_ALIVE) => {
                if !send(Bytes::from_static(b": keep-alive\n\n")).await {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = api.stop.cancelled() => return,
        }
    }
}

/// The records as SSE events. A body's JSON may hold line breaks (it is
/// kept as Google sent it): each line goes in its own `data:` field, which
/// the client joins back with `\n`.
fn events(records: &[ChangeRecord]) -> String {
    let mut out = String::new();
    for r in records {
        let json = serde_json::to_string(r).unwrap_or_default();
        let _ = writeln!(out, "id: {}", r.seq);
        for line in json.split('\n') {
            let _ = writeln!(out, "data: {}", line.trim_end_matches('\r'));
        }
        out.push('\n');
    }
    out
}

/// The cursor a stream starts from: `Last-Event-ID` (a reconnecting
/// client's) over `after=`.
pub(super) fn resume_from(last_event_id: Option<&str>, after: Seq) -> Result<Seq, String> {
    match last_event_id.map(str::trim) {
        None | Some("") => Ok(after),
        Some(v) => v
            .parse::<u64>()
            .map(Seq::new)
            .map_err(|_| format!("Last-Event-ID must be a seq, got {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_with_line_breaks_becomes_several_data_lines() {
        let r = ChangeRecord {
            seq: Seq::new(7),
            account: "a".into(),
            calendar_id: "c".into(),
            event_id: "e".into(),
            change: crate::store::ChangeKind::Created,
            etag: None,
            sequence: None,
            updated: None,
            changed_fields: vec![],
            event: serde_json::from_str("{\n  \"id\": \"e\"\n}").expect("json"),
            previous: None,
            detected_at: crate::time::Timestamp::now(),
        };
        let text = events(&[r]);
        assert!(text.starts_with("id: 7\ndata: {"), "{text}");
        assert!(text.ends_with("\n\n"), "{text}");
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect::<Vec<_>>()
            .join("\n");
        let v: serde_json::Value = serde_json::from_str(&data).expect("the data is the record");
        assert_eq!(v["event"]["id"], "e");
        assert!(text
            .lines()
            .all(|l| l.is_empty() || l.starts_with("id: ") || l.starts_with("data: ")));
    }

    #[test]
    fn last_event_id_wins_over_after() {
        assert_eq!(resume_from(Some("12"), Seq::new(3)), Ok(Seq::new(12)));
        assert_eq!(resume_from(None, Seq::new(3)), Ok(Seq::new(3)));
        assert!(resume_from(Some("x"), Seq::ZERO).is_err());
    }
}

//! `GET /v1/snapshot?account=A&calendar_id=C`: every live event of one
//! calendar as the store holds it, for a consumer that starts fresh or
//! whose cursor fell behind feed retention (410). Streamed as it is read
//! (one blocking task per snapshot, a few 64 KB chunks in flight), never
//! built whole in memory:
//!
//! ```text
//! {"store_id":"…","as_of":N,"account":"A","calendar_id":"C","events":[
//! {"event_id":"…","etag":"…","seq":S,"event":{…the Event as Google sent it…}},
//! …
//! ]}
//! ```
//!
//! `as_of` is the feed's head read before the first event: the snapshot
//! holds every event whose latest record is at or before it (`seq`, 0 for
//! versions stored before this was kept) and leaves out what changed
//! after, so a consumer that loads it and then follows
//! `/v1/changes?after=as_of` misses nothing. The events are read while the
//! sync may go on writing, so a record after `as_of` can repeat what the
//! snapshot already showed: recognise it by `(event_id, etag)`. A read
//! error midway cuts the connection, so the body ends as invalid JSON.

use std::io::Write;

use hyper::body::Bytes;
use tokio::sync::mpsc;

use crate::http::{self, Response};
use crate::store::{Body, CalendarKey, EventStatus, Seq, Store};

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for a slow client before the reader waits too.
const IN_FLIGHT: usize = 4;

/// Starts streaming the snapshot of `key` as of the feed head `as_of`;
/// `slot` is held until the last byte is handed over.
pub(crate) fn stream(
    store: Store,
    key: CalendarKey,
    as_of: Seq,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        if let Err(e) = write(&store, &key, as_of, &tx) {
            tracing::warn!(account = %key.account, calendar = %key.calendar_id, error = %e, "snapshot cut short");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    http::stream(rx)
}

/// Why a snapshot stopped early.
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("the client went away")]
    Gone,
    #[error("cannot read the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn write(
    store: &Store,
    key: &CalendarKey,
    as_of: Seq,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), Cut> {
    let send = |buf: &mut Vec<u8>| {
        tx.blocking_send(Ok(Bytes::from(std::mem::take(buf))))
            .map_err(|_| Cut::Gone)
    };
    let mut buf = serde_json::to_vec(&serde_json::json!({
        "store_id": store.id(),
        "as_of": as_of,
        "account": key.account,
        "calendar_id": key.calendar_id,
    }))
    .unwrap_or_default();
    buf.pop(); // the closing brace: the events follow
    buf.extend_from_slice(b",\"events\":[");
    let mut first = true;
    for version in store.events(key) {
        let v = version?;
        if EventStatus::of(v.status.as_deref()) == EventStatus::Cancelled || v.last_change > as_of {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        let body = match &v.body {
            Body::Stored(id) => store.body(*id)?,
            Body::New(json) => json.clone(),
        };
        // Writing JSON into a Vec cannot fail.
        let _ = write!(
            buf,
            "\n{{\"event_id\":{},\"etag\":{},\"seq\":{},\"event\":{}}}",
            serde_json::Value::from(v.id),
            serde_json::to_string(&v.etag).unwrap_or_default(),
            v.last_change,
            body.get()
        );
        if buf.len() >= CHUNK {
            send(&mut buf)?;
        }
    }
    buf.extend_from_slice(b"\n]}\n");
    send(&mut buf)
}

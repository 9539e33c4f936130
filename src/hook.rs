//! The listener Google's push notifications arrive at (`hook.listen`,
//! usually behind a TLS reverse proxy). Every request is hostile until its
//! channel id and token match a channel we created: unknown channel -> 404,
//! wrong or missing token -> 401, and neither ever triggers a sync. A valid
//! `exists`/`not_exists` pokes the calendar's trigger (the engine
//! debounces); `sync` confirms the channel. Answers at once; never calls
//! Google, never writes events.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};

use crate::accounts::Calendars;
use crate::channels::{ChannelIndex, ChannelMsg, ChannelsHandle};
use crate::http::{self, Response};
use crate::metrics::Metrics;

/// Unknown channel ids remembered for log-once (bounded against floods).
const MAX_REMEMBERED_UNKNOWN: usize = 10_000;
/// Time a client has to send a (small) body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The hook's routes and what they check against.
#[derive(Clone)]
pub(crate) struct Hook {
    /// The path of `hook.public_url`, the only one pings are taken on.
    path: String,
    max_body: usize,
    index: ChannelIndex,
    calendars: Calendars,
    channels: ChannelsHandle,
    unknown_seen: Arc<Mutex<HashSet<String>>>,
    metrics: Metrics,
}

impl Hook {
    pub(crate) fn new(
        path: &str,
        max_body: usize,
        index: ChannelIndex,
        calendars: Calendars,
        channels: ChannelsHandle,
        metrics: Metrics,
    ) -> Self {
        Hook {
            path: path.to_string(),
            max_body,
            index,
            calendars,
            channels,
            unknown_seen: Arc::default(),
            metrics,
        }
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response {
        let path = req.uri().path();
        match *req.method() {
            Method::GET if path == "/healthz" => http::empty(StatusCode::OK),
            Method::POST if path == self.path => self.ping(req).await,
            _ if path == self.path => http::empty(StatusCode::METHOD_NOT_ALLOWED),
            _ => http::empty(StatusCode::NOT_FOUND),
        }
    }

    async fn ping(&self, req: Request<Incoming>) -> Response {
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return self.bad(StatusCode::PAYLOAD_TOO_LARGE);
        }
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, self.max_body).collect()).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return self.bad(StatusCode::PAYLOAD_TOO_LARGE)
            }
            Ok(Err(_)) | Err(_) => return self.bad(StatusCode::BAD_REQUEST),
        }
        let h = &parts.headers;
        let (Some(id), Some(state)) = (
            header(h, "x-goog-channel-id"),
            header(h, "x-goog-resource-state"),
        ) else {
            return self.bad(StatusCode::BAD_REQUEST);
        };
        let Some(entry) = self.index.get(id) else {
            return self.unknown(id, state, header(h, "x-goog-resource-id"));
        };
        let token = header(h, "x-goog-channel-token").unwrap_or("");
        if !entry.token.ct_eq(token.as_bytes()) {
            self.metrics.ping(state, "forbidden");
            tracing::debug!(channel = %id, "ping with a wrong or missing token");
            return http::empty(StatusCode::UNAUTHORIZED);
        }
        match state {
            "sync" => {
                self.metrics.ping(state, "sync");
                self.channels.confirmed(id.into());
            }
            "exists" | "not_exists" => match self.calendars.trigger(&entry.watched) {
                Some(trigger) => {
                    self.metrics.ping(state, "ok");
                    trigger.poke();
                }
                None => return self.unknown(id, state, None),
            },
            _ => return self.bad(StatusCode::BAD_REQUEST),
        }
        http::empty(StatusCode::OK)
    }

    /// 404, logged once per channel id; an orphan of a collection we know
    /// is stopped (once) by the scheduler.
    fn unknown(&self, id: &str, state: &str, resource_id: Option<&str>) -> Response {
        self.metrics.ping(state, "unknown");
        let first = self.unknown_seen.lock().is_ok_and(|mut seen| {
            seen.len() < MAX_REMEMBERED_UNKNOWN && seen.insert(id.to_string())
        });
        if first {
            tracing::info!(channel = %id.chars().take(64).collect::<String>(), "ping for an unknown channel (logged once per id)");
            let ours = crate::channels::plausibly_ours(id);
            if let Some(rid) =
                resource_id.filter(|r| ours && self.index.resource_owner(r).is_some())
            {
                self.channels.send(ChannelMsg::Orphan {
                    id: id.into(),
                    resource_id: rid.to_string(),
                });
            }
        }
        http::empty(StatusCode::NOT_FOUND)
    }

    fn bad(&self, status: StatusCode) -> Response {
        self.metrics.ping("other", "bad");
        http::empty(status)
    }
}

/// A header, case-insensitively (HeaderMap names are normalised).
fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

//! The local API on `api.listen`: the change feed (`/v1/changes`, with
//! long-poll and filters by account and calendar), snapshots, the calendars
//! (`/v1/calendars`), health, and the client that `gcal-syncd status` uses.
//! Reads only; never mutates sync or channel state. `query.rs` parses and
//! checks the query strings.

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod client;
mod query;
mod stream;

pub use client::{fetch_calendars, fetch_sinks, reset_sink, CallError};

use query::{parse_query, snapshot_query, ChangesQuery};

use crate::accounts::Calendars;
use crate::feed::Feed;
use crate::http::{self, Response};
use crate::metrics::{CalendarSample, Metrics};
use crate::secret::Secret;
use crate::sinks::ResetError;
use crate::status::{CalendarStatus, CalendarsAnswer, ChannelStatus, StoreStatus};
use crate::store::{CalendarKey, FeedRead, Seq, Store};
use crate::sync::StatusBoard;
use crate::time::Timestamp;

/// What the API handler reads.
#[derive(Clone)]
pub struct Api {
    store: Store,
    feed: Feed,
    board: StatusBoard,
    /// The running calendars.
    calendars: Calendars,
    token: Option<Secret>,
    /// Ends pending long-polls at shutdown.
    stop: CancellationToken,
    metrics: Metrics,
    /// Slots for long-polls that wait; see [`MAX_WAITING`].
    waiting: Arc<Semaphore>,
    /// Slots for snapshots being streamed; see [`MAX_SNAPSHOTS`].
    snapshots: Arc<Semaphore>,
    /// What each sink's task last did, and the sinks' manager.
    sinks: Option<crate::sinks::Sinks>,
    /// The SSE events streams at the same cursor share (see `stream.rs`).
    recent: stream::Recent,
}

/// Long-polls that may wait at once. Below the API's connection limit
/// (`http::Limits::API`), so waiting readers never take the last
/// connections `/healthz`, `/metrics` and `status` need; one more gets a
/// 429 with `Retry-After`.
pub const MAX_WAITING: usize = 1024;

/// Snapshots streamed at once (each reads the store on a blocking thread);
/// one more gets a 429 with `Retry-After`.
pub const MAX_SNAPSHOTS: usize = 16;

impl Api {
    pub fn new(
        store: Store,
        feed: Feed,
        board: StatusBoard,
        calendars: Calendars,
        token: Option<Secret>,
        stop: CancellationToken,
        metrics: Metrics,
    ) -> Self {
        Api {
            metrics,
            store,
            feed,
            board,
            calendars,
            token,
            stop,
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            snapshots: Arc::new(Semaphore::new(MAX_SNAPSHOTS)),
            sinks: None,
            recent: Default::default(),
        }
    }

    /// Shows the sinks' state on `/v1/sinks`.
    pub(crate) fn with_sinks(mut self, sinks: crate::sinks::Sinks) -> Self {
        self.sinks = Some(sinks);
        self
    }

    fn sink_states(&self) -> Vec<crate::sinks::SinkStatus> {
        self.sinks
            .as_ref()
            .map(|s| s.board.all())
            .unwrap_or_default()
    }

    /// `/v1/sinks`: each sink's cursor, state and lag behind the feed.
    fn sinks(&self) -> Response {
        let head = self.feed.head();
        let now = chrono::Utc::now();
        let sinks: Vec<Value> = self
            .sink_states()
            .into_iter()
            .map(|s| {
                let (records, seconds) = s.lag(head, now);
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["lag_records"] = json!(records);
                v["lag_seconds"] = json!(seconds);
                v
            })
            .collect();
        http::json(
            StatusCode::OK,
            &json!({ "sinks": sinks, "feed_head": head, "store_id": self.store.id() }),
        )
    }

    /// `POST /v1/sinks/{name}/reset`: enables a disabled sink again.
    async fn reset_sink(&self, name: &str) -> Response {
        let Some(sinks) = &self.sinks else {
            return http::error(StatusCode::NOT_FOUND, "no sinks are configured");
        };
        // Sink names are plain (letters, digits, '.', '_', '-'): nothing to decode.
        match sinks.reset(name).await {
            Ok(done) => http::json(StatusCode::OK, &json!(done)),
            Err(e @ ResetError::Unknown(_)) => http::error(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e @ ResetError::Failed(_)) => {
                http::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
            }
        }
    }

    /// Routes one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response {
        let path = req.uri().path().to_string();
        if path.starts_with("/v1/") {
            if let Some(denied) = self.check_token(&req) {
                return denied;
            }
        }
        let query = parse_query(req.uri().query());
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => self.health(),
            (&Method::GET, "/v1/changes") => match ChangesQuery::parse(&query) {
                Ok(q) => self.changes(q).await,
                Err(msg) => http::error(StatusCode::BAD_REQUEST, &msg),
            },
            (&Method::GET, "/v1/changes/stream") => {
                let last = req
                    .headers()
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap_or("?"));
                match ChangesQuery::parse(&query).and_then(|mut q| {
                    q.after = stream::resume_from(last, q.after)?;
                    Ok(q)
                }) {
                    Ok(q) => self.stream(q),
                    Err(msg) => http::error(StatusCode::BAD_REQUEST, &msg),
                }
            }
            (&Method::GET, "/v1/calendars") => self.calendars(),
            (&Method::GET, "/v1/sinks") => self.sinks(),
            (method, p) if p.starts_with("/v1/sinks/") && p.ends_with("/reset") => {
                if method != Method::POST {
                    return http::error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
                }
                let name = &p["/v1/sinks/".len()..p.len() - "/reset".len()];
                self.reset_sink(name).await
            }
            (&Method::GET, "/v1/snapshot") => match snapshot_query(&query) {
                Ok(key) => self.snapshot(key),
                Err(msg) => http::error(StatusCode::BAD_REQUEST, &msg),
            },
            (&Method::GET, "/metrics") => self.metrics(),
            (
                _,
                "/healthz" | "/v1/changes" | "/v1/changes/stream" | "/v1/calendars" | "/v1/sinks"
                | "/v1/snapshot" | "/metrics",
            ) => http::error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            (_, path) => http::error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        }
    }

    fn check_token(&self, req: &Request<Incoming>) -> Option<Response> {
        let token = self.token.as_ref()?;
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if token.ct_eq(t.trim().as_bytes()) => None,
            _ => Some(http::error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            )),
        }
    }

    /// 200 while the store takes writes, 503 (with the reason) while it
    /// does not: the daemon is up, but the feed is paused.
    fn health(&self) -> Response {
        let mut body = json!({ "status": "ok", "store": self.store.path().display().to_string(), "store_id": self.store.id(), "feed_head": self.feed.head() });
        if let Some(aside) = self.store.recovered_from() {
            body["store_recovered_from"] = json!(aside.display().to_string());
        }
        match self.feed.failure() {
            None => http::json(StatusCode::OK, &body),
            Some(reason) => {
                body["status"] = json!("failing");
                body["store_error"] = json!(reason);
                http::json(StatusCode::SERVICE_UNAVAILABLE, &body)
            }
        }
    }

    /// The store's condition, for `/v1/calendars` (and so `status`).
    fn store_status(&self) -> StoreStatus {
        StoreStatus {
            path: self.store.path().display().to_string(),
            id: self.store.id().to_string(),
            feed_head: self.feed.head(),
            error: self.feed.failure(),
            recovered_from: self.store.recovered_from().map(|p| p.display().to_string()),
        }
    }

    /// `/v1/changes`: the records after `q.after` (of the filter's
    /// calendars), up to the published head; with `wait`, held until one
    /// arrives. `next` is the last seq looked at, so a filtered reader
    /// moves past records it does not want.
    async fn changes(&self, q: ChangesQuery) -> Response {
        let deadline = tokio::time::Instant::now() + q.wait;
        let mut cursor = q.after;
        let mut slot = None;
        loop {
            // Only durable records are served: a failed write can leave
            // records above the head in the store's memory.
            let head = self.feed.head();
            if head > cursor {
                let (changes, through) = match self.read(&q, cursor, head) {
                    Ok(read) => read,
                    Err(answer) => return *answer,
                };
                cursor = through;
                // A filter that matched nothing in a full scan answers at
                // once, so that the reader's cursor moves on.
                let more = through < head;
                if !changes.is_empty() || q.wait.is_zero() || more {
                    return self.answer(&changes, cursor);
                }
            } else if q.wait.is_zero() {
                return self.answer(&[], cursor);
            }
            if slot.is_none() {
                match self.waiting.clone().try_acquire_owned() {
                    Ok(s) => slot = Some(s),
                    Err(_) => {
                        return retry_after(
                            StatusCode::TOO_MANY_REQUESTS,
                            &format!("{MAX_WAITING} long-polls are waiting already; retry shortly"),
                            "1",
                        )
                    }
                }
            }
            let mut heads = self.feed.subscribe();
            let arrived = async {
                while *heads.borrow_and_update() <= cursor {
                    if heads.changed().await.is_err() {
                        return false;
                    }
                }
                true
            };
            let arrived = tokio::select! {
                a = arrived => a,
                _ = tokio::time::sleep_until(deadline) => false,
                _ = self.stop.cancelled() => false,
            };
            if !arrived {
                return self.answer(&[], cursor);
            }
        }
    }

    /// One read of the feed for [`Api::changes`]: the records and the last
    /// seq looked at, or the answer to give instead (410 behind retention,
    /// 503 while the store fails, 500).
    fn read(
        &self,
        q: &ChangesQuery,
        cursor: Seq,
        head: Seq,
    ) -> Result<(Vec<crate::store::ChangeRecord>, Seq), Box<Response>> {
        let read = self.store.read_feed(cursor, head, q.limit, &q.filter);
        match read {
            Ok(FeedRead::Gone(pruned)) => Err(Box::new(http::json(
                StatusCode::GONE,
                &json!({
                    "error": format!(
                        "records up to seq {pruned} were removed by feed.retention, so the feed after {cursor} is incomplete; \
                         re-read the state you mirror from Google, then continue with after={pruned}"
                    ),
                    "pruned_through": pruned,
                    "store_id": self.store.id(),
                }),
            ))),
            Ok(FeedRead::Records(records, through)) => Ok((records, through)),
            // sled fails reads too after a write error, until the writer's
            // reopen: tell readers to come back rather than that it broke.
            Err(e) if self.feed.failure().is_some() => Err(Box::new(retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is failing and the feed is paused: {e}"),
                "5",
            ))),
            Err(e) => Err(Box::new(http::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the feed: {e}"),
            ))),
        }
    }

    fn answer(&self, changes: &[crate::store::ChangeRecord], next: Seq) -> Response {
        /// Serialized as it is: through `json!` each body would be parsed
        /// into a `Value` tree and written out again.
        #[derive(serde::Serialize)]
        struct Answer<'a> {
            changes: &'a [crate::store::ChangeRecord],
            next: Seq,
            store_id: &'a str,
        }
        let answer = Answer {
            changes,
            next,
            store_id: self.store.id(),
        };
        match serde_json::to_string(&answer) {
            Ok(text) => http::json_text(StatusCode::OK, text),
            Err(e) => http::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the records: {e}"),
            ),
        }
    }

    /// `/v1/changes/stream` (see `stream.rs`): refused like a long-poll
    /// when the cursor is behind retention, the store is failing, or every
    /// waiting slot is taken (a stream holds one).
    fn stream(&self, q: ChangesQuery) -> Response {
        if let Some(reason) = self.feed.failure() {
            return retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is failing and the feed is paused: {reason}"),
                "5",
            );
        }
        if let Err(answer) = self.read(&q, q.after, Seq::ZERO) {
            return *answer;
        }
        let Ok(slot) = self.waiting.clone().try_acquire_owned() else {
            return retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("{MAX_WAITING} long-polls and streams are open already; retry shortly"),
                "1",
            );
        };
        stream::start(self.clone(), q, slot)
    }

    /// `/v1/snapshot` of a running calendar (see `snapshot.rs`).
    fn snapshot(&self, key: CalendarKey) -> Response {
        if !self
            .calendars
            .contains(&crate::accounts::Watched::Events(key.clone()))
        {
            return http::error(
                StatusCode::NOT_FOUND,
                &format!("{key} is not a calendar this daemon follows"),
            );
        }
        if let Some(reason) = self.feed.failure() {
            return retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is failing and the feed is paused: {reason}"),
                "5",
            );
        }
        let Ok(slot) = self.snapshots.clone().try_acquire_owned() else {
            return retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("{MAX_SNAPSHOTS} snapshots are being sent already; retry shortly"),
                "5",
            );
        };
        crate::snapshot::stream(self.store.clone(), key, self.feed.head(), slot)
    }

    /// Prometheus scrape: gauges that depend on time or the store are
    /// filled now, then everything is rendered.
    fn metrics(&self) -> Response {
        let now = chrono::Utc::now();
        let head = self.feed.head();
        // Sinks a reload removed go from the scrape.
        self.metrics.sink_lag.clear();
        self.metrics.sink_lag_seconds.clear();
        self.metrics.sink_disabled.clear();
        for sink in self.sink_states() {
            let (records, seconds) = sink.lag(head, now);
            let labels = crate::metrics::SinkLabels { sink: sink.name };
            self.metrics
                .sink_disabled
                .get_or_create(&labels)
                .set(i64::from(sink.state == "disabled"));
            let records = i64::try_from(records).unwrap_or(i64::MAX);
            self.metrics.sink_lag.get_or_create(&labels).set(records);
            self.metrics
                .sink_lag_seconds
                .get_or_create(&labels)
                .set(seconds as f64);
        }
        let channels = newest_active(self.store.channels().unwrap_or_default());
        let secs = |t: Timestamp| t.as_datetime().timestamp_millis() as f64 / 1000.0;
        let now_secs = now.timestamp_millis() as f64 / 1000.0;
        let calendars = (self.calendars.keys().into_iter())
            .map(|key| {
                let last = self.store.calendar(&key).ok().and_then(|s| s.last_sync_at);
                CalendarSample {
                    counts: self.board.counts(&key),
                    last_success: last.map(secs),
                    sync_lag: last.map(|t| (now_secs - secs(t)).max(0.0)),
                    channel_expiry: (channels.get(&key).and_then(|c| c.expiration_ms))
                        .map(|ms| ms as f64 / 1000.0),
                    account: key.account,
                    calendar: key.calendar_id,
                }
            })
            .collect();
        for (account, client) in self.calendars.clients() {
            let labels = crate::metrics::AccountLabels { account };
            let (used, limit) = client.quota_used();
            let used = i64::try_from(used).unwrap_or(i64::MAX);
            self.metrics.quota_used.get_or_create(&labels).set(used);
            self.metrics
                .quota_limit
                .get_or_create(&labels)
                .set(i64::from(limit));
        }
        self.metrics.feed_head.set(self.feed.head().get() as i64);
        self.metrics
            .store_bytes
            .set(self.store.size_on_disk().unwrap_or(0) as i64);
        let mut resp = http::json_text(StatusCode::OK, self.metrics.render(calendars));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        resp
    }

    /// Always answers 200 when the daemon runs: a store that cannot be
    /// read leaves the stored columns empty and says why in `store.error`,
    /// so that `status` shows the calendars and the trouble together.
    fn calendars(&self) -> Response {
        let keys = self.calendars.keys();
        let mut unreadable: Option<String> = None;
        let mut note = |e: crate::store::StoreError| {
            unreadable.get_or_insert_with(|| format!("cannot read the store: {e}"));
        };
        let channels = newest_active(self.store.channels().unwrap_or_else(|e| {
            note(e);
            Vec::new()
        }));
        let mut calendars = Vec::new();
        for key in keys {
            let state = self.store.calendar(&key).unwrap_or_else(|e| {
                note(e);
                Default::default()
            });
            let live = self.board.get(&key).unwrap_or_default();
            calendars.push(CalendarStatus {
                channel: channels.get(&key).map(|c| ChannelStatus {
                    id: c.id.to_string(),
                    expires_at: c.expiration_ms.and_then(Timestamp::from_millis),
                    confirmed: c.confirmed,
                }),
                poll_only: self.store.poll_only(&key).unwrap_or(false),
                account: key.account,
                calendar_id: key.calendar_id,
                state: live.state,
                last_sync_at: state.last_sync_at,
                has_sync_token: state.sync_token.is_some(),
                events: state.events,
                progress: live.progress,
                passes: live.passes,
                last_error: live.last_error.or(state.last_error),
            });
        }
        let mut store = self.store_status();
        if store.error.is_none() {
            store.error = unreadable;
        }
        let answer = CalendarsAnswer { calendars, store };
        http::json(
            StatusCode::OK,
            &serde_json::to_value(answer).unwrap_or_default(),
        )
    }
}

/// An error answer that tells the client when to come back.
fn retry_after(status: StatusCode, message: &str, seconds: &'static str) -> Response {
    let mut resp = http::error(status, message);
    resp.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static(seconds),
    );
    resp
}

/// Each calendar's newest active channel, in one pass over the channels
/// (not one per calendar: thousands of calendars make that quadratic).
fn newest_active(
    channels: Vec<crate::store::ChannelRecord>,
) -> HashMap<CalendarKey, crate::store::ChannelRecord> {
    let mut newest: HashMap<CalendarKey, crate::store::ChannelRecord> = HashMap::new();
    for c in channels {
        if c.state != crate::store::ChannelState::Active {
            continue;
        }
        match newest.get(&c.calendar) {
            Some(n) if n.expiration_ms >= c.expiration_ms => {}
            _ => {
                newest.insert(c.calendar.clone(), c);
            }
        }
    }
    newest
}

//! Calendar v3 calls of one account: rate-limited, authorized, retried once
//! after a 401 with a fresh token, and classified into [`GoogleError`].
//! Responses are read leniently: unknown fields and values are kept in the
//! raw JSON, and an item without an id is skipped, never fatal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Authenticator;
use super::limiter::{Limiter, Urgency};
use super::GoogleError;
use crate::rawjson::RawJson;

/// The parameters of one events.list page. Full and incremental syncs
/// use the same ones (plus the sync token), as Google requires.
#[derive(Debug, Clone, Default)]
pub struct ListParams<'a> {
    pub single_events: bool,
    pub max_results: u32,
    pub sync_token: Option<&'a str>,
    pub page_token: Option<&'a str>,
    /// The calendar's urgency, for an incremental pass (see the limiter);
    /// none for a full sync, which is always background work.
    pub urgency: Option<&'a Urgency>,
}

/// One page of events.list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    /// The Event resources exactly as Google sent them.
    #[serde(default)]
    pub items: Vec<RawJson>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

/// What events.watch answered.
#[derive(Debug, Clone)]
pub struct WatchResponse {
    pub resource_id: String,
    /// Milliseconds since the epoch (Google sends a string).
    pub expiration_ms: Option<i64>,
}

/// The share of an account's quota that safety-net polls may take: 20%.
pub(super) const POLL_SHARE: f64 = 0.2;

/// One poll of each of `calendars` per interval, at most [`POLL_SHARE`] of
/// `per_minute` requests a minute: 5000 calendars at Google's 600 a minute
/// are polled at most every 41 min 40 s.
pub(super) fn poll_floor(calendars: usize, per_minute: u32) -> Duration {
    let polls_per_minute = f64::from(per_minute.max(1)) * POLL_SHARE;
    Duration::from_secs_f64(calendars as f64 * 60.0 / polls_per_minute)
}

/// Calendar v3 for one account.
pub struct GoogleClient {
    http: reqwest::Client,
    base: Url,
    auth: Authenticator,
    limiter: Limiter,
    requests_per_minute: u32,
    /// Calendars of the account the daemon follows (for [`Self::poll_floor`]).
    followed: AtomicUsize,
}

impl GoogleClient {
    pub fn new(
        base: &Url,
        auth: Authenticator,
        requests_per_minute: u32,
        http: reqwest::Client,
    ) -> Self {
        GoogleClient {
            http,
            base: base.clone(),
            auth,
            limiter: Limiter::new(requests_per_minute),
            requests_per_minute,
            followed: AtomicUsize::new(0),
        }
    }

    /// Requests in the account's quota window now, and its limit.
    pub fn quota_used(&self) -> (usize, u32) {
        (self.limiter.in_window(), self.requests_per_minute)
    }

    /// How many of the account's calendars are followed (set on every
    /// start and reload).
    pub fn set_followed(&self, calendars: usize) {
        self.followed.store(calendars, Ordering::Relaxed);
    }

    /// The shortest safety-net poll interval that keeps the polls of every
    /// followed calendar within [`POLL_SHARE`] of the account's quota.
    pub fn poll_floor(&self) -> Duration {
        poll_floor(
            self.followed.load(Ordering::Relaxed),
            self.requests_per_minute,
        )
    }

    /// How long replacing the channel of every followed calendar (a watch
    /// and a stop each) takes at the share of the quota background work
    /// gets.
    pub fn renewal_time(&self) -> Duration {
        self.limiter
            .background_time(2 * self.followed.load(Ordering::Relaxed))
    }

    /// A reqwest client with timeouts on every call and no proxy surprises
    /// for loopback addresses.
    pub fn http_client() -> reqwest::Client {
        crate::tls::ensure_provider();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("gcal-syncd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One page of events.list.
    pub async fn events_list(
        &self,
        calendar_id: &str,
        p: &ListParams<'_>,
    ) -> Result<EventsPage, GoogleError> {
        let url = self.url(&["calendars", calendar_id, "events"]);
        let mut query: Vec<(&str, String)> = vec![
            ("showDeleted", "true".into()),
            ("singleEvents", p.single_events.to_string()),
            ("maxResults", p.max_results.to_string()),
        ];
        if let Some(t) = p.sync_token {
            query.push(("syncToken", t.to_string()));
        }
        if let Some(t) = p.page_token {
            query.push(("pageToken", t.to_string()));
        }
        let resp = self
            .send(p.urgency, |http| {
                http.request(Method::GET, url.clone()).query(&query)
            })
            .await?;
        read_json(resp, "events.list").await
    }

    /// events.watch: a channel on the calendar's events.
    pub async fn events_watch(
        &self,
        calendar_id: &str,
        id: &str,
        token: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<WatchResponse, GoogleError> {
        let url = self.url(&["calendars", calendar_id, "events", "watch"]);
        self.watch(url, id, token, address, ttl).await
    }

    /// calendarList.watch: a channel on the account's calendar list.
    pub async fn calendar_list_watch(
        &self,
        id: &str,
        token: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<WatchResponse, GoogleError> {
        let url = self.url(&["users", "me", "calendarList", "watch"]);
        self.watch(url, id, token, address, ttl).await
    }

    async fn watch(
        &self,
        url: Url,
        id: &str,
        token: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<WatchResponse, GoogleError> {
        let body = json!({
            "id": id, "type": "web_hook", "address": address, "token": token,
            "params": { "ttl": ttl.as_secs().to_string() },
        });
        let resp = self
            .send(None, |http| {
                http.request(Method::POST, url.clone()).json(&body)
            })
            .await?;
        let v: Value = read_json(resp, "watch").await?;
        let resource_id = v
            .get("resourceId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let expiration_ms = v
            .get("expiration")
            .and_then(|e| e.as_i64().or_else(|| e.as_str()?.parse().ok()));
        Ok(WatchResponse {
            resource_id,
            expiration_ms,
        })
    }

    /// channels.stop. A 404 means it is already gone, which is success.
    pub async fn channels_stop(&self, id: &str, resource_id: &str) -> Result<(), GoogleError> {
        let url = self.url(&["channels", "stop"]);
        let body = json!({ "id": id, "resourceId": resource_id });
        match self
            .send(None, |http| {
                http.request(Method::POST, url.clone()).json(&body)
            })
            .await
        {
            Ok(_) | Err(GoogleError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One page of calendarList.list: (entries, nextPageToken, nextSyncToken).
    pub async fn calendar_list(
        &self,
        page_token: Option<&str>,
        sync_token: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>, Option<String>), GoogleError> {
        let url = self.url(&["users", "me", "calendarList"]);
        let mut query: Vec<(&str, &str)> = vec![("showDeleted", "true"), ("showHidden", "true")];
        if let Some(t) = page_token {
            query.push(("pageToken", t));
        }
        if let Some(t) = sync_token {
            query.push(("syncToken", t));
        }
        let resp = self
            .send(None, |http| {
                http.request(Method::GET, url.clone()).query(&query)
            })
            .await?;
        let v: Value = read_json(resp, "calendarList.list").await?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let items = v
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok((items, text("nextPageToken"), text("nextSyncToken")))
    }

    /// Sends with a token; a 401 refreshes the token and retries once.
    async fn send(
        &self,
        urgency: Option<&Urgency>,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<reqwest::Response, GoogleError> {
        let token = self.auth.token().await?;
        let resp = self.send_once(urgency, &build, &token).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return classify(resp).await;
        }
        let token = self.auth.refresh().await?;
        let resp = self.send_once(urgency, &build, &token).await?;
        match classify(resp).await {
            Err(GoogleError::Unauthorized(_)) => Err(GoogleError::Unauthorized(
                "Google refused a fresh access token; re-authorise the account".into(),
            )),
            other => other,
        }
    }

    /// One rate-limited, authorized request.
    async fn send_once(
        &self,
        urgency: Option<&Urgency>,
        build: &impl Fn(&reqwest::Client) -> RequestBuilder,
        token: &crate::secret::Secret,
    ) -> Result<reqwest::Response, GoogleError> {
        self.limiter.acquire(urgency).await;
        build(&self.http)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| GoogleError::Transient(Box::new(e)))
    }
}

/// Success passes through; errors become [`GoogleError`] by status and
/// Google's reason.
async fn classify(resp: reqwest::Response) -> Result<reqwest::Response, GoogleError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = resp.json().await.unwrap_or_default();
    let reason = body
        .pointer("/error/errors/0/reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let location = body
        .pointer("/error/errors/0/location")
        .and_then(Value::as_str);
    Err(match (status.as_u16(), reason.as_str()) {
        (s @ 410, "fullSyncRequired" | "updatedMinTooLongAgo") => {
            GoogleError::SyncTokenGone { status: s, reason }
        }
        (s @ 400, _) if location == Some("syncToken") => {
            GoogleError::SyncTokenGone { status: s, reason }
        }
        (401, _) => GoogleError::Unauthorized(message),
        (429, _) | (403, "rateLimitExceeded" | "userRateLimitExceeded") => {
            GoogleError::RateLimited {
                reason: if reason.is_empty() {
                    "rateLimitExceeded".into()
                } else {
                    reason
                },
                retry_after,
            }
        }
        (404, _) => GoogleError::NotFound(message),
        (400, "pushNotSupportedForRequestedResource") => GoogleError::PushNotSupported(message),
        (s, _) if s >= 500 => GoogleError::Transient(format!("{status} {reason} {message}").into()),
        (s, _) => GoogleError::Rejected {
            status: s,
            reason,
            message,
        },
    })
}

/// The body of a successful answer, parsed; a body that does not arrive or
/// is not the JSON expected is transient (a proxy's error page, a cut
/// connection).
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> Result<T, GoogleError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| GoogleError::Transient(Box::new(e)))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| GoogleError::Transient(format!("{what} answer is not JSON: {e}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_take_at_most_a_fifth_of_the_quota() {
        // 120 polls a minute of 600: 5000 calendars, each every 41m40s.
        assert_eq!(poll_floor(5000, 600), Duration::from_secs(2500));
        assert_eq!(poll_floor(10, 600), Duration::from_secs(5));
        assert_eq!(poll_floor(0, 600), Duration::ZERO);
        assert_eq!(
            poll_floor(1, 0),
            Duration::from_secs(300),
            "a zero quota counts as one"
        );
    }
}

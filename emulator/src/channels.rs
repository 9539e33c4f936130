//! Push channels: events.watch and calendarList.watch validation, one
//! resourceId per watched collection, channels.stop, and the fan-out of a
//! change to every live channel of its collection (knobs applied here:
//! drop, duplicate, delay, reorder, coalesce, delivery after stop).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::rng::stable_hash;
use super::world::World;

/// What a channel watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub(super) enum Resource {
    /// A calendar's events.
    Events(String),
    /// A principal's calendarList.
    CalendarList(String),
}

/// A channel as the emulator keeps it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Channel {
    pub id: String,
    pub resource: Resource,
    pub resource_id: String,
    pub resource_uri: String,
    pub address: String,
    #[serde(skip)]
    pub token: Option<String>,
    pub expiration_ms: i64,
    /// The service account or OAuth client that created it.
    pub client: String,
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Last message number used.
    pub number: u64,
    #[serde(skip)]
    pub coalesce_until: Option<Instant>,
}

impl Channel {
    pub(super) fn expired(&self, now: DateTime<Utc>) -> bool {
        now.timestamp_millis() >= self.expiration_ms
    }
}

/// One notification on its way.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub channel_id: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration_ms: i64,
    pub resource_id: String,
    pub resource_uri: String,
    pub state: &'static str,
    pub number: u64,
    pub delay: Duration,
    /// Sent in order with the channel's other notifications (false when
    /// the reorder knob is on).
    pub ordered: bool,
}

/// The body of events.watch / calendarList.watch.
pub(super) struct WatchRequest {
    pub id: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration_ms: Option<i64>,
    pub ttl_secs: Option<i64>,
}

impl WatchRequest {
    pub(super) fn parse(body: &Value) -> Result<WatchRequest, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object."))?;
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(String::from);
        let id = text("id")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::required("id"))?;
        if id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b))
        {
            return Err(ApiError::invalid_param(
                "id",
                "Channel id must match [A-Za-z0-9\\-_\\+/=]+ and be at most 64 characters",
            ));
        }
        match text("type").as_deref() {
            Some("web_hook" | "webhook") => {}
            Some(other) => {
                return Err(ApiError::new(
                    400,
                    "push",
                    "channelTypeNotSupported",
                    format!("Channel type '{other}' is not supported."),
                ))
            }
            None => return Err(ApiError::required("type")),
        }
        let address = text("address")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::required("address"))?;
        let token = text("token");
        if token.as_ref().is_some_and(|t| t.len() > 256) {
            return Err(ApiError::invalid_param(
                "token",
                "Channel token must be at most 256 characters",
            ));
        }
        let expiration_ms = match obj.get("expiration") {
            None | Some(Value::Null) => None,
            Some(v) => Some(int64(v).ok_or_else(|| {
                ApiError::invalid_param("expiration", "Invalid expiration value.")
            })?),
        };
        let ttl_secs = match obj.get("params").and_then(|p| p.get("ttl")) {
            None => None,
            Some(v) => Some(
                int64(v)
                    .filter(|t| *t > 0)
                    .ok_or_else(|| ApiError::invalid_param("params.ttl", "Invalid ttl value."))?,
            ),
        };
        Ok(WatchRequest {
            id,
            address,
            token,
            expiration_ms,
            ttl_secs,
        })
    }
}

/// int64 fields arrive as JSON strings (or numbers).
fn int64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

impl World {
    /// events.watch / calendarList.watch, after access was checked.
    pub(super) fn watch(
        &mut self,
        req: WatchRequest,
        resource: Resource,
        client: &str,
        principal: &str,
    ) -> Result<(Value, Option<Delivery>), ApiError> {
        if self.used_channel_ids.contains(&req.id) {
            return Err(
                ApiError::new(400, "push", "channelIdNotUnique", "Channel id not unique")
                    .at("parameter", "id"),
            );
        }
        let url = reqwest::Url::parse(&req.address).map_err(|_| {
            ApiError::new(
                400,
                "push",
                "invalidAddress",
                format!("Invalid WebHook address: {}", req.address),
            )
        })?;
        let https = url.scheme() == "https";
        if !(https || (self.opts.allow_http && url.scheme() == "http")) {
            return Err(ApiError::new(
                400,
                "push",
                "webhookUrlNotHttps",
                format!("WebHook callback must be HTTPS: {}", req.address),
            ));
        }
        let now = self.now();
        let max = now.timestamp_millis() + self.opts.max_channel_ttl.as_millis() as i64;
        let asked = match (req.expiration_ms, req.ttl_secs) {
            (Some(ms), _) => ms,
            (None, Some(ttl)) => now.timestamp_millis() + ttl.saturating_mul(1000),
            (None, None) => now.timestamp_millis() + 604_800_000,
        };
        if asked <= now.timestamp_millis() {
            return Err(ApiError::invalid_param(
                "expiration",
                "Channel expiration must be in the future.",
            ));
        }
        let (resource_id, resource_uri) = self.resource_names(&resource);
        let channel = Channel {
            id: req.id.clone(),
            resource,
            resource_id: resource_id.clone(),
            resource_uri: resource_uri.clone(),
            address: req.address,
            token: req.token.clone(),
            expiration_ms: asked.min(max),
            client: client.to_string(),
            principal: principal.to_string(),
            created_at: now,
            stopped_at: None,
            number: 1,
            coalesce_until: None,
        };
        let mut body = json!({
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": resource_id,
            "resourceUri": resource_uri,
            "expiration": channel.expiration_ms.to_string(),
        });
        if let Some(t) = &req.token {
            body["token"] = json!(t);
        }
        let sync = Delivery {
            channel_id: channel.id.clone(),
            address: channel.address.clone(),
            token: channel.token.clone(),
            expiration_ms: channel.expiration_ms,
            resource_id,
            resource_uri,
            state: "sync",
            number: 1,
            delay: Duration::ZERO,
            ordered: true,
        };
        self.used_channel_ids.insert(req.id.clone());
        self.channels.insert(req.id, channel);
        *self.counters.pings_sent.entry("sync".into()).or_default() += 1;
        Ok((body, Some(sync)))
    }

    /// The opaque resourceId and resourceUri of a collection (stable).
    fn resource_names(&self, resource: &Resource) -> (String, String) {
        let (label, uri) = match resource {
            Resource::Events(cal) => (
                format!("events:{cal}"),
                format!(
                    "{}/calendars/{}/events?alt=json",
                    self.api_root,
                    urlencode(cal)
                ),
            ),
            Resource::CalendarList(p) => (
                format!("calendarList:{p}"),
                format!("{}/users/me/calendarList?alt=json", self.api_root),
            ),
        };
        let h = stable_hash(self.opts.seed ^ 0x7e50, &label);
        let h2 = stable_hash(h, &label);
        (format!("{h:016x}{:010x}", h2 & 0xff_ffff_ffff), uri)
    }

    /// channels.stop.
    pub(super) fn stop(&mut self, body: &Value, client: &str) -> Result<(), ApiError> {
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::required("id"))?;
        let resource_id = body
            .get("resourceId")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::required("resourceId"))?;
        let project = self.opts.project_number;
        let not_found = || {
            ApiError::new(
                404,
                "global",
                "notFound",
                format!("Channel '{id}' not found for project '{project}'"),
            )
        };
        let now = self.now();
        let channel = self
            .channels
            .get_mut(id)
            .filter(|c| c.stopped_at.is_none() && c.resource_id == resource_id)
            .ok_or_else(not_found)?;
        if channel.client != client {
            return Err(ApiError::new(
                403,
                "global",
                "forbidden",
                "Channel belongs to another client.",
            ));
        }
        channel.stopped_at = Some(now);
        Ok(())
    }

    /// Fans a change out to every live channel on `resource`.
    pub(super) fn notify(&mut self, resource: &Resource) {
        if self.muted {
            return;
        }
        let now = self.now();
        let after_stop = chrono::Duration::milliseconds(self.push.after_stop_ms as i64);
        let ids: Vec<String> = self
            .channels
            .values()
            .filter(|c| &c.resource == resource && !c.expired(now))
            .filter(|c| c.stopped_at.is_none_or(|at| now - at < after_stop))
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            self.notify_channel(&id);
        }
    }

    fn notify_channel(&mut self, id: &str) {
        let knobs = self.push.clone();
        if self.rng.chance(knobs.drop_rate) {
            self.counters.pings_dropped += 1;
            return;
        }
        let gap = if self.rng.chance(knobs.number_gap_rate) {
            1 + self.rng.below(3)
        } else {
            0
        };
        let jitter = self.rng.below(knobs.reorder_ms + 1);
        let duplicate = self.rng.chance(knobs.duplicate_rate);
        let Some(ch) = self.channels.get_mut(id) else {
            return;
        };
        let instant = Instant::now();
        if ch.coalesce_until.is_some_and(|until| instant < until) {
            return; // merged into the notification already on its way
        }
        let window = Duration::from_millis(knobs.coalesce_ms);
        if !window.is_zero() {
            ch.coalesce_until = Some(instant + window);
        }
        ch.number += 1 + gap;
        let delivery = Delivery {
            channel_id: ch.id.clone(),
            address: ch.address.clone(),
            token: ch.token.clone(),
            expiration_ms: ch.expiration_ms,
            resource_id: ch.resource_id.clone(),
            resource_uri: ch.resource_uri.clone(),
            state: "exists",
            number: ch.number,
            delay: Duration::from_millis(knobs.delay_ms + jitter) + window,
            ordered: knobs.reorder_ms == 0,
        };
        let copies = if duplicate { 2 } else { 1 };
        for _ in 0..copies {
            *self.counters.pings_sent.entry("exists".into()).or_default() += 1;
            if self.outbox.send(delivery.clone()).is_err() {
                return;
            }
        }
    }

    /// Channels for the control API.
    pub(super) fn channel_list(&self) -> Value {
        let now = self.now();
        let list: Vec<Value> = self
            .channels
            .values()
            .map(|c| {
                let state = if c.stopped_at.is_some() {
                    "stopped"
                } else if c.expired(now) {
                    "expired"
                } else {
                    "active"
                };
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                v["state"] = json!(state);
                v["expiration"] = json!(Utc
                    .timestamp_millis_opt(c.expiration_ms)
                    .single()
                    .map(|t| t.to_rfc3339()));
                v
            })
            .collect();
        json!({ "channels": list })
    }
}

/// Percent-encodes a path segment (calendar ids contain `@` and `#`).
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

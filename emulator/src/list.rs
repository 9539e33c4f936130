//! events.list: every parameter of the Calendar API, paging with tokens
//! bound to their query, incremental sync with sync tokens, tombstones and
//! the `showDeleted` x `singleEvents` matrix.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::calendar::{Calendar, StoredEvent};
use super::error::ApiError;
use super::event::{self, parse_time, rfc3339, tombstone};
use super::rng::{stable_hash, Rng};
use super::token::Sealer;

const GLOBAL_PARAMS: &[&str] = &[
    "fields",
    "prettyPrint",
    "quotaUser",
    "key",
    "alt",
    "access_token",
    "oauth_token",
    "userIp",
    "$.xgafv",
    "callback",
];
const EVENT_TYPES: &[&str] = &[
    "birthday",
    "default",
    "focusTime",
    "fromGmail",
    "outOfOffice",
    "workingLocation",
];

/// The parsed query of one events.list call.
#[derive(Debug, Default, Clone)]
pub(super) struct ListQuery {
    pub event_types: Vec<String>,
    pub ical_uid: Option<String>,
    pub max_attendees: Option<usize>,
    pub max_results: usize,
    pub order_by: Option<String>,
    pub page_token: Option<String>,
    pub private_ext: Vec<(String, String)>,
    pub shared_ext: Vec<(String, String)>,
    pub q: Option<String>,
    pub show_deleted: Option<bool>,
    pub single_events: bool,
    pub sync_token: Option<String>,
    pub time_min: Option<DateTime<Utc>>,
    pub time_max: Option<DateTime<Utc>>,
    pub time_zone: Option<String>,
    pub updated_min: Option<DateTime<Utc>>,
    /// Hash of every parameter but pageToken: page tokens are bound to it.
    pub query_hash: u64,
}

impl ListQuery {
    /// Parses and checks the query string pairs.
    pub(super) fn parse(pairs: &[(String, String)]) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery {
            max_results: 250,
            ..Default::default()
        };
        let mut canon: Vec<String> = Vec::new();
        for (k, v) in pairs {
            if k != "pageToken" {
                canon.push(format!("{k}={v}"));
            }
            match k.as_str() {
                "eventTypes" => {
                    if !EVENT_TYPES.contains(&v.as_str()) {
                        return Err(ApiError::invalid_param(
                            "eventTypes",
                            format!("Invalid value for eventTypes: {v}"),
                        ));
                    }
                    q.event_types.push(v.clone());
                }
                "iCalUID" => q.ical_uid = Some(v.clone()),
                "maxAttendees" => q.max_attendees = Some(positive(k, v)?),
                "maxResults" => q.max_results = positive(k, v)?.min(2500),
                "orderBy" => match v.as_str() {
                    "startTime" | "updated" => q.order_by = Some(v.clone()),
                    _ => {
                        return Err(ApiError::invalid_param(
                            "orderBy",
                            format!("Invalid value for orderBy: {v}"),
                        ))
                    }
                },
                "pageToken" => q.page_token = Some(v.clone()),
                "privateExtendedProperty" => q.private_ext.push(ext_prop(k, v)?),
                "sharedExtendedProperty" => q.shared_ext.push(ext_prop(k, v)?),
                "q" => q.q = Some(v.to_lowercase()),
                "showDeleted" => q.show_deleted = Some(boolean(k, v)?),
                "showHiddenInvitations" => {
                    boolean(k, v)?;
                }
                "singleEvents" => q.single_events = boolean(k, v)?,
                "syncToken" => q.sync_token = Some(v.clone()),
                "timeMin" => q.time_min = Some(timestamp(k, v)?),
                "timeMax" => q.time_max = Some(timestamp(k, v)?),
                "timeZone" => {
                    v.parse::<Tz>().map_err(|_| {
                        ApiError::invalid_param("timeZone", format!("Invalid time zone: {v}"))
                    })?;
                    q.time_zone = Some(v.clone());
                }
                "updatedMin" => q.updated_min = Some(timestamp(k, v)?),
                "quotaUser" if v.len() > 40 => {
                    return Err(ApiError::invalid_param(
                        "quotaUser",
                        "quotaUser is longer than 40 characters",
                    ))
                }
                _ if GLOBAL_PARAMS.contains(&k.as_str()) => {}
                _ => {
                    return Err(ApiError::invalid_param(
                        k,
                        format!("Unknown parameter: {k}"),
                    ))
                }
            }
        }
        canon.sort();
        q.query_hash = stable_hash(0, &canon.join("&"));
        q.check_combinations()?;
        Ok(q)
    }

    fn check_combinations(&self) -> Result<(), ApiError> {
        if self.order_by.as_deref() == Some("startTime") && !self.single_events {
            return Err(ApiError::invalid_param(
                "orderBy",
                "The requested ordering is not available for the particular query.",
            ));
        }
        if let (Some(min), Some(max)) = (self.time_min, self.time_max) {
            if min >= max {
                return Err(ApiError::new(
                    400,
                    "calendar",
                    "timeRangeEmpty",
                    "The specified time range is empty.",
                )
                .at("parameter", "timeMax"));
            }
        }
        if self.sync_token.is_none() {
            return Ok(());
        }
        let forbidden = [
            ("iCalUID", self.ical_uid.is_some()),
            ("orderBy", self.order_by.is_some()),
            ("privateExtendedProperty", !self.private_ext.is_empty()),
            ("sharedExtendedProperty", !self.shared_ext.is_empty()),
            ("q", self.q.is_some()),
            ("timeMin", self.time_min.is_some()),
            ("timeMax", self.time_max.is_some()),
            ("updatedMin", self.updated_min.is_some()),
            ("showDeleted", self.show_deleted == Some(false)),
        ];
        match forbidden.iter().find(|(_, used)| *used) {
            Some((name, _)) => Err(ApiError::invalid_param(
                name,
                format!("The parameter {name} cannot be used together with syncToken."),
            )),
            None => Ok(()),
        }
    }

    /// Filters that make the listing unusable as a base for a sync token.
    fn has_filter_forbidden_with_sync(&self) -> bool {
        self.ical_uid.is_some()
            || self.order_by.is_some()
            || !self.private_ext.is_empty()
            || !self.shared_ext.is_empty()
            || self.q.is_some()
            || self.updated_min.is_some()
    }
}

fn positive(k: &str, v: &str) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::invalid_param(k, format!("Invalid value for {k}: {v}")))
}

fn boolean(k: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::invalid_param(
            k,
            format!("Invalid boolean value for {k}: {v}"),
        )),
    }
}

fn timestamp(k: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid_param(
                k,
                format!("{k} must be an RFC3339 timestamp with mandatory time zone offset: {v}"),
            )
        })
}

fn ext_prop(k: &str, v: &str) -> Result<(String, String), ApiError> {
    v.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| ApiError::invalid_param(k, format!("{k} must be propertyName=value")))
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// Hash of the query this token continues.
    q: u64,
    /// Calendar revision when the listing began: the next sync token.
    snap: u64,
    epoch: u64,
    /// Sort key of the last item given out.
    cur: Option<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct SyncToken {
    cal: String,
    rev: u64,
    epoch: u64,
    issued_ms: i64,
    single: bool,
    types: Vec<String>,
}

/// What a list call needs besides the calendar and the query.
pub(super) struct ListEnv<'a> {
    pub now: DateTime<Utc>,
    pub sealer: &'a Sealer,
    pub rng: &'a mut Rng,
    /// Sync tokens older than this answer 410.
    pub token_ttl: Duration,
    /// updatedMin older than now minus this answers 410.
    pub updated_min_horizon: Duration,
    /// Chance of a short or empty page that still carries nextPageToken.
    pub short_page_rate: f64,
    pub horizon: DateTime<Utc>,
    pub reader: &'a str,
}

/// One candidate item in listing order; borrowed from the calendar where
/// it can be (the common path copies no event).
struct Item<'a> {
    key: (String, String),
    body: Cow<'a, Map<String, Value>>,
}

/// events.list. Returns the response body (JSON text, written straight
/// from the stored events) and the number of items in it.
pub(super) fn list(
    cal: &Calendar,
    q: &ListQuery,
    env: &mut ListEnv<'_>,
) -> Result<(String, usize), ApiError> {
    let since = match &q.sync_token {
        Some(t) => Some(open_sync_token(cal, q, t, env)?),
        None => None,
    };
    if let Some(min) = q.updated_min {
        if min < env.now - env.updated_min_horizon {
            return Err(ApiError::updated_min_too_long_ago());
        }
    }
    let (snap, cursor) = match &q.page_token {
        None => (cal.rev, None),
        Some(t) => {
            let tok: PageToken = env
                .sealer
                .open(t)
                .filter(|p: &PageToken| p.q == q.query_hash)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "pageToken",
                        "Invalid page token, or the query differs from the one that produced it.",
                    )
                })?;
            if tok.epoch != cal.epoch && since.is_some() {
                return Err(ApiError::full_sync_required());
            }
            (tok.snap, tok.cur)
        }
    };
    let limit = if env.rng.chance(env.short_page_rate) {
        env.rng.below(q.max_results as u64) as usize
    } else {
        q.max_results
    };
    let (items, more) = page(cal, q, since, cursor.as_ref(), limit, env);
    let last_key = items.last().map(|i| i.key.clone()).or(cursor);
    let count = items.len();

    let mut out = json!({
        "kind": "calendar#events",
        "etag": cal.etag(),
        "summary": cal.summary,
        "updated": rfc3339(cal.updated),
        "timeZone": q.time_zone.clone().unwrap_or_else(|| cal.time_zone.clone()),
        "accessRole": cal.role(env.reader).unwrap_or("reader"),
        "defaultReminders": [],
    });
    if more {
        out["nextPageToken"] = json!(env.sealer.seal(&PageToken {
            q: q.query_hash,
            snap,
            epoch: cal.epoch,
            cur: last_key
        }));
    } else if !q.has_filter_forbidden_with_sync() {
        let tok = SyncToken {
            cal: cal.id.clone(),
            rev: snap,
            epoch: cal.epoch,
            issued_ms: env.now.timestamp_millis(),
            single: q.single_events,
            types: q.event_types.clone(),
        };
        out["nextSyncToken"] = json!(env.sealer.seal(&tok));
    }
    // The envelope, then the items appended without building a Value tree.
    let mut text = out.to_string();
    text.pop(); // the closing brace
    text.push_str(",\"items\":[");
    let mut buf = std::mem::take(&mut text).into_bytes();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let written = match render(item.body, q, env.reader) {
            Cow::Borrowed(body) => serde_json::to_writer(&mut buf, body),
            Cow::Owned(body) => serde_json::to_writer(&mut buf, &body),
        };
        written.map_err(|_| ApiError::backend(500))?;
    }
    buf.extend_from_slice(b"]}");
    Ok((
        String::from_utf8(buf).map_err(|_| ApiError::backend(500))?,
        count,
    ))
}

fn open_sync_token(
    cal: &Calendar,
    q: &ListQuery,
    token: &str,
    env: &ListEnv<'_>,
) -> Result<u64, ApiError> {
    let tok: SyncToken = env
        .sealer
        .open(token)
        .filter(|t: &SyncToken| t.cal == cal.id)
        .ok_or_else(|| ApiError::invalid_param("syncToken", "Invalid sync token value."))?;
    if tok.single != q.single_events || tok.types != q.event_types {
        return Err(ApiError::invalid_param("syncToken", "The sync token was issued for a request with different parameters (singleEvents, eventTypes)."));
    }
    let expired = env.now.timestamp_millis() - tok.issued_ms > env.token_ttl.num_milliseconds();
    if tok.epoch != cal.epoch && cal.stale_tokens_invalid {
        return Err(ApiError::invalid_param(
            "syncToken",
            "Invalid sync token value.",
        ));
    }
    if tok.epoch != cal.epoch || expired || tok.rev < cal.purged_rev {
        return Err(ApiError::full_sync_required());
    }
    Ok(tok.rev)
}

/// Up to `limit` items after `cursor`, and whether more remain.
fn page<'a>(
    cal: &'a Calendar,
    q: &ListQuery,
    since: Option<u64>,
    cursor: Option<&(String, String)>,
    limit: usize,
    env: &ListEnv<'_>,
) -> (Vec<Item<'a>>, bool) {
    let mut out = Vec::new();
    if !q.single_events && q.order_by.is_none() {
        // Fast path: the calendar's own order is the listing order.
        let start = cursor.map(|(h, id)| (u64::from_str_radix(h, 16).unwrap_or(0), id.clone()));
        let lower = start.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let iter = cal.events.range((lower, std::ops::Bound::Unbounded));
        for ((hash, id), ev) in iter {
            if !include(ev, ev.rev, q, since, false, env) {
                continue;
            }
            if out.len() == limit {
                return (out, true);
            }
            out.push(Item {
                key: (format!("{hash:016x}"), id.clone()),
                body: Cow::Borrowed(&ev.body),
            });
        }
        return (out, false);
    }
    let mut all = expanded(cal, q, since, env);
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let skip = cursor.map_or(0, |c| all.partition_point(|i| &i.key <= c));
    let mut rest = all.into_iter().skip(skip);
    out.extend(rest.by_ref().take(limit));
    (out, rest.next().is_some())
}

/// Every candidate of a `singleEvents=true` or ordered listing.
fn expanded<'a>(
    cal: &'a Calendar,
    q: &ListQuery,
    since: Option<u64>,
    env: &ListEnv<'_>,
) -> Vec<Item<'a>> {
    let horizon = q.time_max.unwrap_or(env.horizon).min(env.horizon);
    let mut out = Vec::new();
    for ev in cal.events.values() {
        if q.single_events && ev.is_master() {
            for at in cal.occurrences(ev, horizon) {
                let id = format!("{}_{}", ev.id(), at.id_suffix());
                let (body, rev, exception) = match cal.get(&id) {
                    Some(ex) => (ex.body.clone(), ev.rev.max(ex.rev), true),
                    None => (event::instance_of(&ev.body, at), ev.rev, false),
                };
                let mut body = body;
                if ev.cancelled() {
                    body.insert("status".into(), json!("cancelled"));
                }
                let inst = StoredEvent {
                    body,
                    rev,
                    deleted_at: None,
                };
                if include(&inst, rev, q, since, exception || ev.cancelled(), env) {
                    out.push(Item {
                        key: sort_key(cal, q, &inst.body, &id),
                        body: Cow::Owned(inst.body),
                    });
                }
            }
            continue;
        }
        let master_listed = ev
            .recurring_event_id()
            .is_some_and(|m| cal.get(m).is_some_and(StoredEvent::is_master));
        if q.single_events && master_listed {
            continue; // given out with its master's instances
        }
        if include(ev, ev.rev, q, since, false, env) {
            out.push(Item {
                key: sort_key(cal, q, &ev.body, ev.id()),
                body: Cow::Borrowed(&ev.body),
            });
        }
    }
    out
}

fn sort_key(
    cal: &Calendar,
    q: &ListQuery,
    body: &Map<String, Value>,
    id: &str,
) -> (String, String) {
    let primary = match q.order_by.as_deref() {
        Some("startTime") => parse_time(body.get("start"), "start")
            .map(|t| rfc3339(t.when().utc()))
            .unwrap_or_default(),
        Some("updated") => body
            .get("updated")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => format!("{:016x}", cal.key(id).0),
    };
    (primary, id.to_string())
}

/// Whether an event (or instance) belongs in this listing.
fn include(
    ev: &StoredEvent,
    rev: u64,
    q: &ListQuery,
    since: Option<u64>,
    from_series: bool,
    env: &ListEnv<'_>,
) -> bool {
    let body = &ev.body;
    if !q.event_types.is_empty() {
        let kind = body
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("default");
        if !ev.cancelled() && !q.event_types.iter().any(|t| t == kind) {
            return false;
        }
    }
    if let Some(since) = since {
        return rev > since;
    }
    if let Some(min) = q.updated_min {
        let updated = body
            .get("updated")
            .and_then(Value::as_str)
            .and_then(|u| DateTime::parse_from_rfc3339(u).ok());
        if updated.is_none_or(|u| u < min) {
            return false;
        }
        if ev.cancelled() {
            return true;
        }
    }
    if ev.cancelled() {
        let show_deleted = q.show_deleted.unwrap_or(false);
        let is_instance = ev.recurring_event_id().is_some();
        return match (show_deleted, q.single_events) {
            // Cancelled instances are listed even without showDeleted.
            (false, false) => is_instance,
            (true, false) => true,
            // Deleted single events and instances, never masters.
            (true, true) => !ev.is_master() && (is_instance || !from_series),
            (false, true) => false,
        };
    }
    matches_filters(body, q, env)
}

fn matches_filters(body: &Map<String, Value>, q: &ListQuery, env: &ListEnv<'_>) -> bool {
    if let Some(uid) = &q.ical_uid {
        if body.get("iCalUID").and_then(Value::as_str) != Some(uid) {
            return false;
        }
    }
    if let Some(text) = &q.q {
        let hay = ["summary", "description", "location"]
            .iter()
            .filter_map(|k| body.get(*k).and_then(Value::as_str))
            .chain(
                body.get("attendees")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.get("email").and_then(Value::as_str)),
            )
            .any(|s| s.to_lowercase().contains(text.as_str()));
        if !hay {
            return false;
        }
    }
    for (scope, props) in [("private", &q.private_ext), ("shared", &q.shared_ext)] {
        for (k, v) in props {
            let got = body
                .get("extendedProperties")
                .and_then(|e| e.get(scope))
                .and_then(|s| s.get(k));
            if got.and_then(Value::as_str) != Some(v.as_str()) {
                return false;
            }
        }
    }
    if q.time_min.is_some() || q.time_max.is_some() {
        let start = parse_time(body.get("start"), "start").map(|t| t.when().utc());
        let end = parse_time(body.get("end"), "end").map(|t| t.when().utc());
        let (Ok(start), Ok(end)) = (start, end) else {
            return false;
        };
        // A series spans from its first start to its horizon.
        let end = if body.contains_key("recurrence") {
            env.horizon
        } else {
            end
        };
        if q.time_min.is_some_and(|min| end <= min) || q.time_max.is_some_and(|max| start >= max) {
            return false;
        }
    }
    true
}

/// The item as listed: tombstones are minimal unless the organizer asked
/// for deleted events; `maxAttendees` trims attendees.
fn render<'a>(
    body: Cow<'a, Map<String, Value>>,
    q: &ListQuery,
    reader: &str,
) -> Cow<'a, Map<String, Value>> {
    if body.get("status").and_then(Value::as_str) == Some("cancelled") {
        let organizer = body
            .get("creator")
            .and_then(|c| c.get("email"))
            .and_then(Value::as_str)
            == Some(reader);
        if !(q.show_deleted == Some(true) && organizer && body.contains_key("start")) {
            return match tombstone(&body) {
                Value::Object(m) => Cow::Owned(m),
                _ => body,
            };
        }
    }
    let too_many = |b: &Map<String, Value>| {
        q.max_attendees.is_some_and(|max| {
            b.get("attendees")
                .and_then(Value::as_array)
                .is_some_and(|a| a.len() > max)
        })
    };
    if !too_many(&body) {
        return body;
    }
    let mut body = body.into_owned();
    if let (Some(max), Some(Value::Array(list))) = (q.max_attendees, body.get_mut("attendees")) {
        list.truncate(max);
        body.insert("attendeesOmitted".into(), json!(true));
    }
    Cow::Owned(body)
}

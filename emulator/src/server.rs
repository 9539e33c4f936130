//! HTTP surface of the emulator: Calendar v3 under `/calendar/v3`, the
//! token endpoint at `/token`, and the control API under `/emulator/v1`.
//! Every API call is counted, may meet an injected fault, is authorized
//! (bearer token and scope), charged against the quotas, then served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::auth;
use super::channels::{Resource, WatchRequest};
use super::control;
use super::error::ApiError;
use super::knobs::FaultKind;
use super::list::{list, ListEnv, ListQuery};
use super::push;
use super::world::World;
use crate::http::{self, Abort, Response};

const API_PREFIX: &str = "/calendar/v3";
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Shared by every connection of one emulator.
#[derive(Clone)]
pub(super) struct Server {
    pub world: Arc<Mutex<World>>,
    pub push_client: reqwest::Client,
}

/// A parsed request: method, decoded path segments, query pairs, headers
/// we need, and the body.
pub(super) struct Call {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub auth: Option<String>,
    pub if_match: Option<String>,
    pub body: Vec<u8>,
}

impl Call {
    pub(super) fn json(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::new(400, "global", "parseError", format!("Parse Error: {e}")))
    }
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Result<Response, Abort> {
        let Some(call) = read_call(req).await else {
            return Ok(http::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        };
        let path = call.segments.join("/");
        if call.segments.first().map(String::as_str) == Some("emulator") {
            return Ok(control::handle(self, &call).await);
        }
        if path == "token" && call.method == Method::POST {
            return self.token(&call).await;
        }
        if !format!("/{path}").starts_with(API_PREFIX) {
            return Ok(api_error(&ApiError::not_found()));
        }
        let rest: Vec<&str> = call.segments.iter().skip(2).map(String::as_str).collect();
        let Some(method) = method_name(&call.method, &rest) else {
            return Ok(api_error(&ApiError::not_found()));
        };
        match self.api(method, &rest, &call).await {
            Ok(Outcome::Json(status, v)) => Ok(http::json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                &v,
            )),
            Ok(Outcome::Text(body)) => Ok(http::json_text(StatusCode::OK, body)),
            Ok(Outcome::Empty) => Ok(http::empty(StatusCode::NO_CONTENT)),
            Ok(Outcome::Drop) => Err(Abort),
            Err(e) => Ok(api_error(&e)),
        }
    }

    async fn token(&self, call: &Call) -> Result<Response, Abort> {
        let form: HashMap<String, String> = form_urlencoded(&call.body);
        if let Some(out) = self.fault("token").await {
            return out.map(|e| api_error(&e));
        }
        let result = {
            let mut w = self.world.lock().map_err(|_| Abort)?;
            w.count("token");
            auth::token(&mut w, &form)
        };
        Ok(match result {
            Ok(v) => http::json(StatusCode::OK, &v),
            Err(e) => http::json(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                &e.body(),
            ),
        })
    }

    /// The injected fault for `method`, if one hits: an error to answer,
    /// or Err(Abort) to drop the connection. `Slow` waits, then lets the
    /// call through.
    async fn fault(&self, method: &str) -> Option<Result<ApiError, Abort>> {
        let rule = self.world.lock().ok()?.pick_fault(method)?;
        let e = match rule.kind {
            FaultKind::Unauthorized => ApiError::unauthorized(),
            FaultKind::RateLimit403 => ApiError::rate_limit(403),
            FaultKind::UserRateLimit403 => ApiError::user_rate_limit(),
            FaultKind::RateLimit429 => ApiError::rate_limit(429),
            FaultKind::Backend500 => ApiError::backend(500),
            FaultKind::Unavailable503 => ApiError::backend(503),
            FaultKind::Drop => return Some(Err(Abort)),
            FaultKind::Slow => {
                tokio::time::sleep(Duration::from_millis(rule.slow_ms)).await;
                return None;
            }
            FaultKind::BadItemId => {
                if let Ok(mut w) = self.world.lock() {
                    w.bad_item_ids_pending += 1;
                }
                return None;
            }
        };
        Some(Ok(e))
    }

    async fn api(
        &self,
        method: &'static str,
        rest: &[&str],
        call: &Call,
    ) -> Result<Outcome, ApiError> {
        self.world
            .lock()
            .map_err(|_| ApiError::backend(500))?
            .count(method);
        match self.fault(method).await {
            Some(Ok(e)) => return Err(e),
            Some(Err(Abort)) => return Ok(Outcome::Drop),
            None => {}
        }
        let (principal, client) = {
            let mut w = self.world.lock().map_err(|_| ApiError::backend(500))?;
            let who = auth::authorize(&w, call.auth.as_deref(), method)?;
            w.charge_quota(&who.0, if method == "events.patch" { 3 } else { 1 })?;
            who
        };
        let cal = rest.get(1).copied().unwrap_or("");
        match method {
            "events.list" => self.events_list(&principal, cal, call),
            "events.get" => self.locked(|w| {
                let horizon = w.horizon();
                let c = w.calendar(&principal, cal)?;
                c.read(rest[3], horizon)
                    .map(|b| Outcome::ok(Value::Object(b)))
                    .ok_or_else(ApiError::not_found)
            }),
            "events.insert" | "events.update" | "events.patch" | "events.delete" => {
                self.mutate(method, &principal, cal, rest.get(3).copied(), call)
                    .await
            }
            "events.watch" => self.watch(Some(cal), &principal, &client, call).await,
            "calendarList.watch" => self.watch(None, &principal, &client, call).await,
            "calendarList.list" => {
                self.locked(|w| super::calendars::calendar_list(w, &principal, call))
            }
            "calendars.insert" => self.locked(|w| super::calendars::insert(w, &principal, call)),
            "calendars.get" => self.locked(|w| {
                let c = w.calendar(&principal, cal)?.clone();
                Ok(Outcome::ok(w.calendar_resource(&c)))
            }),
            "calendars.delete" => {
                self.locked(|w| w.delete_calendar(&principal, cal).map(|_| Outcome::Empty))
            }
            "channels.stop" => {
                self.locked(|w| w.stop(&call.json()?, &client).map(|_| Outcome::Empty))
            }
            _ => Err(ApiError::not_found()),
        }
    }

    fn locked(
        &self,
        f: impl FnOnce(&mut World) -> Result<Outcome, ApiError>,
    ) -> Result<Outcome, ApiError> {
        let mut w = self.world.lock().map_err(|_| ApiError::backend(500))?;
        f(&mut w)
    }

    fn events_list(&self, principal: &str, cal: &str, call: &Call) -> Result<Outcome, ApiError> {
        let q = ListQuery::parse(&call.query)?;
        let mut guard = self.world.lock().map_err(|_| ApiError::backend(500))?;
        let w = &mut *guard;
        let id = w.resolve(principal, cal);
        w.calendar(principal, &id)?;
        let dur = |d: std::time::Duration| {
            chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(7))
        };
        let now = w.now();
        let mut env = ListEnv {
            now,
            sealer: &w.sealer,
            rng: &mut w.rng,
            token_ttl: dur(w.opts.sync_token_ttl),
            updated_min_horizon: dur(w.opts.updated_min_horizon),
            short_page_rate: w.short_page_rate,
            horizon: now + dur(w.opts.expansion_horizon),
            reader: principal,
        };
        let calendar = w.calendars.get(&id).ok_or_else(ApiError::not_found)?;
        let (mut body, items) = list(calendar, &q, &mut env)?;
        w.counters.list_items += items as u64;
        *w.counters.list_calls_by_calendar.entry(id).or_default() += 1;
        if w.bad_item_ids_pending > 0 && items > 0 {
            w.bad_item_ids_pending -= 1;
            body = break_first_item_id(&body);
        }
        Ok(Outcome::Text(body))
    }

    async fn mutate(
        &self,
        method: &str,
        principal: &str,
        cal: &str,
        id: Option<&str>,
        call: &Call,
    ) -> Result<Outcome, ApiError> {
        let body = if method == "events.delete" {
            json!({})
        } else {
            call.json()?
        };
        let lag = self.visibility_lag(principal, cal);
        if !lag.is_zero() {
            tokio::time::sleep(lag).await;
        }
        let mut w = self.world.lock().map_err(|_| ApiError::backend(500))?;
        w.muted = !lag.is_zero();
        let if_match = call.if_match.as_deref();
        let out = w.with_calendar(principal, cal, true, |c, ctx| match (method, id) {
            ("events.insert", _) => c.insert(&body, ctx).map(Outcome::ok),
            ("events.update", Some(id)) => {
                c.write(id, &body, false, if_match, ctx).map(Outcome::ok)
            }
            ("events.patch", Some(id)) => c.write(id, &body, true, if_match, ctx).map(Outcome::ok),
            ("events.delete", Some(id)) => c.delete(id, if_match, ctx).map(|_| Outcome::Empty),
            _ => Err(ApiError::not_found()),
        });
        w.muted = false;
        out
    }

    /// With the visibility-lag knob, the ping goes out now and the change
    /// is applied (and visible to list) only after the lag.
    fn visibility_lag(&self, principal: &str, cal: &str) -> Duration {
        let Ok(mut w) = self.world.lock() else {
            return Duration::ZERO;
        };
        let lag = Duration::from_millis(w.push.visibility_lag_ms);
        if !lag.is_zero() {
            let id = w.resolve(principal, cal);
            w.notify(&Resource::Events(id));
        }
        lag
    }

    async fn watch(
        &self,
        cal: Option<&str>,
        principal: &str,
        client: &str,
        call: &Call,
    ) -> Result<Outcome, ApiError> {
        let req = WatchRequest::parse(&call.json()?)?;
        let (body, sync, before) = {
            let mut w = self.world.lock().map_err(|_| ApiError::backend(500))?;
            let resource = match cal {
                Some(cal) => {
                    let c = w.calendar(principal, cal)?;
                    if !c.push_supported {
                        return Err(ApiError::new(
                            400,
                            "global",
                            "pushNotSupportedForRequestedResource",
                            "Push notifications are not supported by this resource.",
                        ));
                    }
                    Resource::Events(c.id.clone())
                }
                None => Resource::CalendarList(principal.to_string()),
            };
            let (body, sync) = w.watch(req, resource, client, principal)?;
            (body, sync, w.push.sync_before_response)
        };
        if let Some(sync) = sync {
            if before {
                push::deliver(&self.world, &self.push_client, sync).await;
            } else if let Ok(w) = self.world.lock() {
                let _ = w.outbox.send(sync);
            }
        }
        Ok(Outcome::ok(body))
    }
}

/// What an API method produced.
/// The `bad_item_id` fault: the first item's `id` becomes a number.
fn break_first_item_id(body: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    if let Some(first) = v.pointer_mut("/items/0") {
        first["id"] = json!(4_242_424_242u64);
    }
    v.to_string()
}

pub(super) enum Outcome {
    Json(u16, Value),
    /// JSON already serialized (events.list writes it directly).
    Text(String),
    Empty,
    Drop,
}

impl Outcome {
    pub(super) fn ok(v: Value) -> Self {
        Outcome::Json(200, v)
    }
}

/// Method name from HTTP method and the path after `/calendar/v3`.
fn method_name(m: &Method, rest: &[&str]) -> Option<&'static str> {
    Some(match (m.as_str(), rest) {
        ("GET", ["calendars", _, "events"]) => "events.list",
        ("POST", ["calendars", _, "events"]) => "events.insert",
        ("POST", ["calendars", _, "events", "watch"]) => "events.watch",
        ("GET", ["calendars", _, "events", _]) => "events.get",
        ("PUT", ["calendars", _, "events", _]) => "events.update",
        ("PATCH", ["calendars", _, "events", _]) => "events.patch",
        ("DELETE", ["calendars", _, "events", _]) => "events.delete",
        ("POST", ["calendars"]) => "calendars.insert",
        ("GET", ["calendars", _]) => "calendars.get",
        ("DELETE", ["calendars", _]) => "calendars.delete",
        ("GET", ["users", "me", "calendarList"]) => "calendarList.list",
        ("POST", ["users", "me", "calendarList", "watch"]) => "calendarList.watch",
        ("POST", ["channels", "stop"]) => "channels.stop",
        _ => return None,
    })
}

pub(super) fn api_error(e: &ApiError) -> Response {
    http::json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        &e.body(),
    )
}

async fn read_call(req: Request<Incoming>) -> Option<Call> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let segments = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query = parts
        .uri
        .query()
        .map(|q| form_pairs(q.as_bytes()))
        .unwrap_or_default();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes()
        .to_vec();
    Some(Call {
        method: parts.method,
        segments,
        query,
        auth: header("authorization"),
        if_match: header("if-match"),
        body,
    })
}

/// Decodes a path segment (`+` stays `+`).
pub(super) fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// Decodes `%XX`, and `+` as a space in query strings and forms.
fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        ) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(raw)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k, true), decode(v, true)),
            None => (decode(p, true), String::new()),
        })
        .collect()
}

fn form_urlencoded(raw: &[u8]) -> HashMap<String, String> {
    form_pairs(raw).into_iter().collect()
}

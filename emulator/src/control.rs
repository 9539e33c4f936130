//! The control API: what tests, benches and the demo do to the emulator
//! that a Google client cannot (create data without OAuth, mutate with or
//! without pings, invalidate tokens, inject faults, read counters). The same
//! operations are Rust methods on [`Control`] and HTTP calls under
//! `/emulator/v1/`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::channels::Resource;
use super::error::ApiError;
use super::knobs::{FaultRule, PushKnobs, QuotaKnobs};
use super::server::{api_error, Call, Server};
use super::world::{Counters, RefreshClient, World};
use crate::http::{self, Response};

/// Every control endpoint and what it does, one line each: `emulator
/// --help` prints this, and a test checks that each one answers.
pub const CONTROL_API: &[(&str, &str)] = &[
    (
        "GET    /calendars",
        "every calendar: id, summary, owner, live events",
    ),
    (
        "POST   /calendars",
        "create one: {\"owner\",\"summary\",\"timeZone\",\"pushSupported\"}",
    ),
    ("DELETE /calendars/{id}", "delete a calendar"),
    (
        "GET    /calendars/{id}/events",
        "every stored event, cancelled ones included",
    ),
    (
        "POST   /calendars/{id}/events",
        "insert an event (event JSON) as the owner",
    ),
    (
        "POST   /calendars/{id}/events:bulk",
        "load many events, no pings: {\"events\":[...]}",
    ),
    ("PATCH  /calendars/{id}/events/{eventId}", "patch an event"),
    ("DELETE /calendars/{id}/events/{eventId}", "delete an event"),
    (
        "POST   /calendars/{id}/invalidateSyncTokens",
        "sync tokens answer 410 (?answer=400: 400 Invalid sync token value)",
    ),
    (
        "POST   /calendars/{id}/expireTombstones",
        "purge tombstones now",
    ),
    (
        "PUT    /faults",
        "inject faults: [{\"kind\",\"rate\",\"method\",\"remaining\",\"slow_ms\"}]",
    ),
    (
        "PUT    /push",
        "push knobs: {\"drop_rate\",\"duplicate_rate\",\"delay_ms\",...}",
    ),
    (
        "PUT    /quota",
        "quotas: {\"per_user_per_minute\",\"per_project_per_minute\",...}",
    ),
    (
        "GET    /counters",
        "calls by method, pings sent, faults injected",
    ),
    ("GET    /channels", "watch channels and their state"),
];

/// The `emulator --help` text after the options: the example and the
/// control API.
pub fn control_api_help() -> String {
    let mut out = String::from(
        "Example:\n  gcal-syncd emulator --listen 127.0.0.1:8080 --allow-http\n\n\
         The API root is the printed URL + /calendar/v3, the token endpoint + /token.\n\
         The control API, under the printed URL + /emulator/v1, needs no OAuth. {id} may be\n\
         `primary` (the printed calendar); add ?ping=false to an event change to make it\n\
         without push notifications.\n",
    );
    for (call, what) in CONTROL_API {
        out.push_str(&format!("  {call:<48} {what}\n"));
    }
    out
}

/// A cheap handle on one emulator's state.
#[derive(Clone)]
pub struct Control {
    pub(super) world: Arc<Mutex<World>>,
}

/// A mutation of an event through the control API.
#[derive(Debug, Clone)]
pub enum Edit {
    Insert(Value),
    Patch(String, Value),
    Update(String, Value),
    Delete(String),
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a bug in the emulator itself;
        // the state is still the best we have.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a calendar owned by `owner` (a principal's email).
    pub fn create_calendar(
        &self,
        owner: &str,
        id: Option<&str>,
        summary: &str,
        time_zone: &str,
    ) -> Result<String, ApiError> {
        self.lock().create_calendar(owner, id, summary, time_zone)
    }

    /// Gives `principal` a role on a calendar (adds it to their list).
    pub fn share_calendar(
        &self,
        calendar: &str,
        principal: &str,
        role: &str,
    ) -> Result<(), ApiError> {
        self.lock().share_calendar(calendar, principal, role)
    }

    /// Deletes a calendar as its owner.
    pub fn delete_calendar(&self, calendar: &str) -> Result<(), ApiError> {
        let mut w = self.lock();
        let owner = owner_of(&w, calendar)?;
        w.delete_calendar(&owner, calendar)
    }

    /// Makes events.watch on this calendar answer pushNotSupportedForRequestedResource.
    pub fn set_push_supported(&self, calendar: &str, supported: bool) -> Result<(), ApiError> {
        let mut w = self.lock();
        w.calendars
            .get_mut(calendar)
            .ok_or_else(ApiError::not_found)?
            .push_supported = supported;
        Ok(())
    }

    /// Applies one edit as the calendar's owner. With `ping`, watchers are
    /// notified as for an API write (and the visibility-lag knob applies).
    pub async fn edit(&self, calendar: &str, edit: Edit, ping: bool) -> Result<Value, ApiError> {
        let lag = {
            let mut w = self.lock();
            let lag = Duration::from_millis(w.push.visibility_lag_ms);
            if ping && !lag.is_zero() {
                w.notify(&Resource::Events(calendar.to_string()));
            }
            lag
        };
        if ping && !lag.is_zero() {
            tokio::time::sleep(lag).await;
        }
        self.as_owner(calendar, !ping || !lag.is_zero(), |c, ctx| match &edit {
            Edit::Insert(body) => c.insert(body, ctx),
            Edit::Patch(id, body) => c.write(id, body, true, None, ctx),
            Edit::Update(id, body) => c.write(id, body, false, None, ctx),
            Edit::Delete(id) => c.delete(id, None, ctx),
        })
    }

    /// Runs a write on the calendar as its owner; `mute` suppresses pings.
    fn as_owner<T>(
        &self,
        calendar: &str,
        mute: bool,
        f: impl FnOnce(
            &mut super::calendar::Calendar,
            &mut super::calendar::WriteCtx<'_>,
        ) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut w = self.lock();
        let owner = owner_of(&w, calendar)?;
        w.muted = mute;
        let out = w.with_calendar(&owner, calendar, true, f);
        w.muted = false;
        out
    }

    /// Inserts many events at once, without pings (loading fixtures).
    pub fn bulk_insert(
        &self,
        calendar: &str,
        events: impl IntoIterator<Item = Value>,
    ) -> Result<usize, ApiError> {
        self.as_owner(calendar, true, |c, ctx| {
            let mut n = 0;
            for e in events {
                c.insert(&e, ctx)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Every sync token of the calendar now answers 410.
    pub fn invalidate_sync_tokens(&self, calendar: &str) -> Result<(), ApiError> {
        self.invalidate_sync_tokens_as(calendar, 410)
    }

    /// Every sync token of the calendar now answers `status`: 410
    /// `fullSyncRequired`, or 400 "Invalid sync token value." naming the
    /// `syncToken` parameter (what Google answers for a token it does not
    /// know). The 400 lasts until the next invalidation with 410.
    pub fn invalidate_sync_tokens_as(&self, calendar: &str, status: u16) -> Result<(), ApiError> {
        if !matches!(status, 400 | 410) {
            return Err(ApiError::invalid_param(
                "answer",
                "answer must be 400 or 410",
            ));
        }
        let mut w = self.lock();
        let cal = w
            .calendars
            .get_mut(calendar)
            .ok_or_else(ApiError::not_found)?;
        cal.epoch += 1;
        cal.stale_tokens_invalid = status == 400;
        Ok(())
    }

    /// Purges every tombstone now (tokens older than them answer 410).
    pub fn expire_tombstones(&self, calendar: &str) -> Result<(), ApiError> {
        let mut w = self.lock();
        let now = w.now() + chrono::Duration::seconds(1);
        w.calendars
            .get_mut(calendar)
            .ok_or_else(ApiError::not_found)?
            .purge_tombstones(now);
        Ok(())
    }

    /// The stored event (tombstones included), as events.get returns it.
    pub fn event(&self, calendar: &str, id: &str) -> Option<Value> {
        let w = self.lock();
        let horizon = w.horizon();
        w.calendars
            .get(calendar)?
            .read(id, horizon)
            .map(Value::Object)
    }

    /// Every calendar: id, summary, time zone, owner, push support, and how
    /// many live (not cancelled) events it stores.
    pub fn calendars(&self) -> Value {
        let w = self.lock();
        let list: Vec<Value> = w
            .calendars
            .values()
            .filter(|c| !c.deleted)
            .map(|c| {
                json!({
                    "id": c.id, "summary": c.summary, "timeZone": c.time_zone,
                    "owner": c.owner, "pushSupported": c.push_supported,
                    "events": c.events.values().filter(|e| !e.cancelled()).count(),
                })
            })
            .collect();
        json!({ "calendars": list })
    }

    /// Every stored event of a calendar as events.get returns it, cancelled
    /// ones (tombstones, cancelled instances) included.
    pub fn events(&self, calendar: &str) -> Result<Value, ApiError> {
        let w = self.lock();
        let cal = w
            .calendars
            .get(calendar)
            .filter(|c| !c.deleted)
            .ok_or_else(ApiError::not_found)?;
        let items: Vec<Value> = cal
            .events
            .values()
            .map(|e| Value::Object(e.body.clone()))
            .collect();
        Ok(json!({ "items": items }))
    }

    /// `(id, etag, cancelled)` of every stored event of a calendar.
    pub fn etags(&self, calendar: &str) -> Vec<(String, String, bool)> {
        let w = self.lock();
        w.calendars.get(calendar).map_or_else(Vec::new, |c| {
            c.events
                .values()
                .map(|e| {
                    (
                        e.id().to_string(),
                        e.body
                            .get("etag")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        e.cancelled(),
                    )
                })
                .collect()
        })
    }

    pub fn set_push(&self, knobs: PushKnobs) {
        self.lock().push = knobs;
    }
    pub fn push(&self) -> PushKnobs {
        self.lock().push.clone()
    }
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.lock().faults = faults;
    }
    pub fn set_quota(&self, quota: QuotaKnobs) {
        self.lock().quota = quota;
    }
    pub fn set_short_page_rate(&self, rate: f64) {
        self.lock().short_page_rate = rate;
    }
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }
    pub fn channels(&self) -> Value {
        self.lock().channel_list()
    }

    /// The token a client gave a channel (what Google echoes in pings).
    pub fn channel_token(&self, id: &str) -> Option<String> {
        self.lock().channels.get(id).and_then(|c| c.token.clone())
    }

    /// Lets the built-in service account impersonate `subject` (`*`: anyone).
    pub fn allow_subject(&self, service_account: &str, subject: &str) -> Result<(), ApiError> {
        let mut w = self.lock();
        let sa = w
            .service_accounts
            .get_mut(service_account)
            .ok_or_else(ApiError::not_found)?;
        sa.subjects.insert(subject.to_string());
        Ok(())
    }

    /// Registers an OAuth client and a user's refresh token.
    pub fn register_refresh_token(
        &self,
        client_id: &str,
        secret: &str,
        refresh_token: &str,
        user: &str,
        scopes: &[&str],
    ) {
        let mut w = self.lock();
        w.ensure_principal(user);
        let client = w
            .refresh_clients
            .entry(client_id.to_string())
            .or_insert_with(|| RefreshClient {
                secret: secret.to_string(),
                tokens: Default::default(),
            });
        client.tokens.insert(
            refresh_token.to_string(),
            (
                user.to_string(),
                scopes.iter().map(|s| s.to_string()).collect(),
            ),
        );
    }

    /// Makes every access token issued so far invalid (401 from then on).
    pub fn revoke_access_tokens(&self) {
        self.lock().access_tokens.clear();
    }
}

/// Routes `/emulator/v1/...`.
pub(super) async fn handle(server: &Server, call: &Call) -> Response {
    let control = Control {
        world: server.world.clone(),
    };
    let mut segs: Vec<&str> = call.segments.iter().skip(2).map(String::as_str).collect();
    // `primary` is the seeded service account's own calendar, as in the
    // Calendar API for a caller holding the printed credentials.
    if let ["calendars", cal @ "primary", ..] = segs.as_mut_slice() {
        *cal = super::SERVICE_ACCOUNT;
    }
    let ping = call.param("ping") != Some("false");
    let result: Result<Value, ApiError> = match (call.method.clone(), segs.as_slice()) {
        (Method::GET, ["counters"]) => {
            Ok(serde_json::to_value(control.counters()).unwrap_or_default())
        }
        (Method::GET, ["channels"]) => Ok(control.channels()),
        (Method::PUT, ["push"]) => parse(call).map(|k| control.set_push(k)).map(|_| json!({})),
        (Method::PUT, ["faults"]) => parse(call)
            .map(|f| control.set_faults(f))
            .map(|_| json!({})),
        (Method::PUT, ["quota"]) => parse(call).map(|q| control.set_quota(q)).map(|_| json!({})),
        (Method::GET, ["calendars"]) => Ok(control.calendars()),
        (Method::GET, ["calendars", cal, "events"]) => control.events(cal),
        (Method::POST, ["calendars"]) => create(&control, call),
        (Method::DELETE, ["calendars", cal]) => control.delete_calendar(cal).map(|_| json!({})),
        (Method::POST, ["calendars", cal, "invalidateSyncTokens"]) => {
            match call.param("answer").unwrap_or("410").parse::<u16>() {
                Ok(status) => control
                    .invalidate_sync_tokens_as(cal, status)
                    .map(|_| json!({})),
                Err(_) => Err(ApiError::invalid_param(
                    "answer",
                    "answer must be 400 or 410",
                )),
            }
        }
        (Method::POST, ["calendars", cal, "expireTombstones"]) => {
            control.expire_tombstones(cal).map(|_| json!({}))
        }
        (Method::POST, ["calendars", cal, "events"]) => match call.json() {
            Ok(body) => control.edit(cal, Edit::Insert(body), ping).await,
            Err(e) => Err(e),
        },
        (Method::POST, ["calendars", cal, "events:bulk"]) => bulk(&control, cal, call),
        (Method::PATCH, ["calendars", cal, "events", id]) => match call.json() {
            Ok(body) => {
                control
                    .edit(cal, Edit::Patch(id.to_string(), body), ping)
                    .await
            }
            Err(e) => Err(e),
        },
        (Method::DELETE, ["calendars", cal, "events", id]) => {
            control.edit(cal, Edit::Delete(id.to_string()), ping).await
        }
        _ => return http::error(StatusCode::NOT_FOUND, "no such control endpoint"),
    };
    match result {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(e) => api_error(&e),
    }
}

fn parse<T: serde::de::DeserializeOwned>(call: &Call) -> Result<T, ApiError> {
    serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("invalid control body: {e}")))
}

fn create(control: &Control, call: &Call) -> Result<Value, ApiError> {
    let body = call.json()?;
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let owner = text("owner").ok_or_else(|| ApiError::required("owner"))?;
    let id = control.create_calendar(
        owner,
        text("id"),
        text("summary").unwrap_or("Calendar"),
        text("timeZone").unwrap_or("UTC"),
    )?;
    if body.get("pushSupported") == Some(&json!(false)) {
        control.set_push_supported(&id, false)?;
    }
    Ok(json!({ "id": id }))
}

fn bulk(control: &Control, cal: &str, call: &Call) -> Result<Value, ApiError> {
    let body = call.json()?;
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ApiError::required("events"))?;
    control
        .bulk_insert(cal, events)
        .map(|n| json!({ "inserted": n }))
}

/// The principal who owns `calendar`.
fn owner_of(w: &World, calendar: &str) -> Result<String, ApiError> {
    w.calendars
        .get(calendar)
        .map(|c| c.owner.clone())
        .ok_or_else(ApiError::not_found)
}

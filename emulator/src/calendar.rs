//! One calendar of the emulator: its events in a shuffled-but-stable order,
//! a revision counter that sync tokens are made of, and the write paths of
//! events.insert/update/patch/delete.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::event::{
    self, changed_keys, check, check_id, client_fields, rfc3339, split_instance_id,
};
use super::recur::When;
use super::rng::{base32hex_id, stable_hash, Rng};

/// Order key of an event: a seeded hash of its id, then the id.
pub(super) type EvKey = (u64, String);

/// One stored event (live, or a tombstone with status `cancelled`).
#[derive(Debug, Clone)]
pub(super) struct StoredEvent {
    /// The resource exactly as `get` returns it.
    pub body: Map<String, Value>,
    /// The calendar revision of its last change.
    pub rev: u64,
    /// When it was deleted (tombstones are purged after the retention).
    pub deleted_at: Option<DateTime<Utc>>,
}

impl StoredEvent {
    pub(super) fn id(&self) -> &str {
        self.body.get("id").and_then(Value::as_str).unwrap_or("")
    }
    pub(super) fn cancelled(&self) -> bool {
        self.body.get("status").and_then(Value::as_str) == Some("cancelled")
    }
    pub(super) fn is_master(&self) -> bool {
        self.body
            .get("recurrence")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }
    pub(super) fn recurring_event_id(&self) -> Option<&str> {
        self.body.get("recurringEventId").and_then(Value::as_str)
    }
}

/// What a write needs from the world: the time, fresh etags and ids.
pub(super) struct WriteCtx<'a> {
    pub now: DateTime<Utc>,
    pub rng: &'a mut Rng,
    pub etag_counter: &'a mut u64,
    /// Series are expanded up to this instant.
    pub horizon: DateTime<Utc>,
    /// The principal writing (becomes `creator`).
    pub principal: &'a str,
}

impl WriteCtx<'_> {
    fn etag(&mut self) -> String {
        *self.etag_counter += 1;
        let micros = self.now.timestamp_micros().max(0) as u64;
        format!("\"{}\"", micros * 1000 + *self.etag_counter % 1000)
    }
}

/// A calendar and its events.
#[derive(Debug, Clone)]
pub(super) struct Calendar {
    pub id: String,
    pub summary: String,
    pub time_zone: String,
    pub owner: String,
    /// Principals other than the owner and their role (`reader`, `writer`).
    pub shared: BTreeMap<String, String>,
    pub push_supported: bool,
    pub deleted: bool,
    /// Bumped on every stored change; sync tokens remember it.
    pub rev: u64,
    /// Bumped to invalidate every sync token of the calendar.
    pub epoch: u64,
    /// Tokens of an older epoch answer 400 "Invalid sync token value."
    /// (as Google does for a token it does not recognise) instead of 410.
    pub stale_tokens_invalid: bool,
    /// Tombstones up to this revision have been purged.
    pub purged_rev: u64,
    pub updated: DateTime<Utc>,
    /// Deletion time of the oldest tombstone, so that a purge with nothing
    /// to do does not scan every event.
    pub oldest_tombstone: Option<DateTime<Utc>>,
    pub seed: u64,
    pub events: BTreeMap<EvKey, StoredEvent>,
}

impl Calendar {
    pub(super) fn new(
        id: &str,
        summary: &str,
        time_zone: &str,
        owner: &str,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Self {
        Calendar {
            id: id.into(),
            summary: summary.into(),
            time_zone: time_zone.into(),
            owner: owner.into(),
            shared: BTreeMap::new(),
            push_supported: true,
            deleted: false,
            rev: 0,
            epoch: 0,
            stale_tokens_invalid: false,
            purged_rev: 0,
            updated: now,
            oldest_tombstone: None,
            seed,
            events: BTreeMap::new(),
        }
    }

    pub(super) fn key(&self, id: &str) -> EvKey {
        (stable_hash(self.seed, id), id.to_string())
    }

    pub(super) fn get(&self, id: &str) -> Option<&StoredEvent> {
        self.events.get(&self.key(id))
    }

    /// The role of `principal` here, if it has access.
    pub(super) fn role(&self, principal: &str) -> Option<&str> {
        if principal == self.owner {
            Some("owner")
        } else {
            self.shared.get(principal).map(String::as_str)
        }
    }

    /// The collection etag (changes with every stored change).
    pub(super) fn etag(&self) -> String {
        format!(
            "\"p{:x}{:04x}\"",
            stable_hash(self.seed, &self.id) & 0xffff_ffff,
            self.rev & 0xffff
        )
    }

    fn store(
        &mut self,
        body: Map<String, Value>,
        deleted_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Value {
        self.rev += 1;
        self.updated = now;
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let out = Value::Object(body.clone());
        if let Some(at) = deleted_at {
            self.oldest_tombstone = Some(self.oldest_tombstone.map_or(at, |o| o.min(at)));
        }
        self.events.insert(
            self.key(&id),
            StoredEvent {
                body,
                rev: self.rev,
                deleted_at,
            },
        );
        out
    }

    /// events.insert. `raw` is the client's body.
    pub(super) fn insert(
        &mut self,
        raw: &Value,
        ctx: &mut WriteCtx<'_>,
    ) -> Result<Value, ApiError> {
        let mut body = client_fields(raw)?;
        let id = match body.get("id").and_then(Value::as_str) {
            Some(id) => {
                check_id(id)?;
                id.to_string()
            }
            None => base32hex_id(ctx.rng, 26),
        };
        if self.get(&id).is_some() {
            return Err(ApiError::duplicate());
        }
        if body.contains_key("originalStartTime") {
            return Err(ApiError::bad_request(
                "originalStartTime may only be set on instances",
            ));
        }
        check(&body)?;
        let now = rfc3339(ctx.now);
        body.insert("id".into(), json!(id));
        body.entry("status").or_insert(json!("confirmed"));
        body.entry("eventType").or_insert(json!("default"));
        body.entry("sequence").or_insert(json!(0));
        body.entry("reminders")
            .or_insert(json!({ "useDefault": true }));
        body.entry("iCalUID")
            .or_insert(json!(format!("{id}@google.com")));
        body.insert("kind".into(), json!("calendar#event"));
        body.insert("etag".into(), json!(ctx.etag()));
        body.insert("created".into(), json!(now));
        body.insert("updated".into(), json!(now));
        body.insert(
            "htmlLink".into(),
            json!(format!("https://www.google.com/calendar/event?eid={id}")),
        );
        body.insert("creator".into(), json!({ "email": ctx.principal }));
        body.insert(
            "organizer".into(),
            json!({ "email": self.id, "displayName": self.summary, "self": true }),
        );
        Ok(self.store(body, None, ctx.now))
    }

    /// events.get: stored events, tombstones included, and unmodified
    /// instances of a live series.
    pub(super) fn read(&self, id: &str, horizon: DateTime<Utc>) -> Option<Map<String, Value>> {
        if let Some(e) = self.get(id) {
            return Some(e.body.clone());
        }
        let (master_id, at) = split_instance_id(id)?;
        let master = self
            .get(master_id)
            .filter(|m| m.is_master() && !m.cancelled())?;
        let series = check(&master.body).ok()??;
        series
            .contains(at, horizon)
            .then(|| event::instance_of(&master.body, at))
    }

    /// events.update (`patch == false`: the body replaces the event) and
    /// events.patch (fields merged; arrays replaced whole).
    pub(super) fn write(
        &mut self,
        id: &str,
        raw: &Value,
        patch: bool,
        if_match: Option<&str>,
        ctx: &mut WriteCtx<'_>,
    ) -> Result<Value, ApiError> {
        let old = self.read(id, ctx.horizon).ok_or_else(ApiError::not_found)?;
        if let Some(tag) = if_match {
            if old.get("etag").and_then(Value::as_str) != Some(tag) {
                return Err(ApiError::condition_not_met());
            }
        }
        let incoming = client_fields(raw)?;
        if incoming
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|new_id| new_id != id)
        {
            return Err(ApiError::invalid_param(
                "id",
                "The event id cannot be changed.",
            ));
        }
        let mut body = if patch {
            old.clone()
        } else {
            server_fields(&old)
        };
        for (k, v) in incoming.iter() {
            body.insert(k.clone(), v.clone());
        }
        for k in ["recurringEventId", "originalStartTime"] {
            if old.get(k) != body.get(k) && old.contains_key(k) {
                return Err(ApiError::bad_request(format!("{k} cannot be changed")));
            }
        }
        check(&body)?;
        self.apply_sequence(&old, &mut body, &incoming, patch)?;
        let changed = changed_keys(&old, &body);
        if changed.is_empty() && self.get(id).is_some() {
            return Ok(Value::Object(old));
        }
        if changed.iter().any(|k| k != "reminders") {
            body.insert("updated".into(), json!(rfc3339(ctx.now)));
        }
        body.insert("etag".into(), json!(ctx.etag()));
        if body.get("status").and_then(Value::as_str) == Some("cancelled") {
            return self.cancel(body, ctx);
        }
        let recurrence_changed = changed.iter().any(|k| k == "recurrence" || k == "start");
        let out = self.store(body, None, ctx.now);
        if recurrence_changed && out.get("recurrence").is_some() {
            self.cancel_orphaned_exceptions(id, ctx);
        }
        Ok(out)
    }

    /// `sequence`: a lower value than stored is refused (omitted counts as
    /// 0 on update, as unchanged on patch); time or recurrence changes bump it.
    fn apply_sequence(
        &self,
        old: &Map<String, Value>,
        body: &mut Map<String, Value>,
        incoming: &Map<String, Value>,
        patch: bool,
    ) -> Result<(), ApiError> {
        let current = old.get("sequence").and_then(Value::as_i64).unwrap_or(0);
        let sent =
            match incoming.get("sequence") {
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    ApiError::invalid_param("sequence", "Invalid sequence value.")
                })?),
                None if patch => None,
                None => Some(0),
            };
        if sent.is_some_and(|s| s < current) {
            return Err(ApiError::invalid_param("sequence", "Invalid sequence value. The specified value is lower than the current sequence number."));
        }
        let time_changed = ["start", "end", "recurrence"]
            .iter()
            .any(|k| old.get(*k) != body.get(*k));
        let next = match sent {
            Some(s) if s > current => s,
            _ if time_changed => current + 1,
            _ => current,
        };
        body.insert("sequence".into(), json!(next));
        Ok(())
    }

    /// events.delete.
    pub(super) fn delete(
        &mut self,
        id: &str,
        if_match: Option<&str>,
        ctx: &mut WriteCtx<'_>,
    ) -> Result<Value, ApiError> {
        let mut body = self.read(id, ctx.horizon).ok_or_else(ApiError::not_found)?;
        if body.get("status").and_then(Value::as_str) == Some("cancelled") {
            return Err(ApiError::deleted());
        }
        if let Some(tag) = if_match {
            if body.get("etag").and_then(Value::as_str) != Some(tag) {
                return Err(ApiError::condition_not_met());
            }
        }
        body.insert("etag".into(), json!(ctx.etag()));
        body.insert("updated".into(), json!(rfc3339(ctx.now)));
        self.cancel(body, ctx)
    }

    /// Stores `body` as cancelled; a master takes its exceptions with it.
    fn cancel(
        &mut self,
        mut body: Map<String, Value>,
        ctx: &mut WriteCtx<'_>,
    ) -> Result<Value, ApiError> {
        body.insert("status".into(), json!("cancelled"));
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let is_master = body.get("recurrence").is_some();
        let out = self.store(body, Some(ctx.now), ctx.now);
        if is_master {
            let exceptions: Vec<String> = self
                .events
                .values()
                .filter(|e| e.recurring_event_id() == Some(id.as_str()) && !e.cancelled())
                .map(|e| e.id().to_string())
                .collect();
            for ex in exceptions {
                self.cancel_stored(&ex, ctx);
            }
        }
        Ok(out)
    }

    fn cancel_stored(&mut self, id: &str, ctx: &mut WriteCtx<'_>) {
        if let Some(mut body) = self.get(id).map(|e| e.body.clone()) {
            body.insert("status".into(), json!("cancelled"));
            body.insert("etag".into(), json!(ctx.etag()));
            body.insert("updated".into(), json!(rfc3339(ctx.now)));
            self.store(body, Some(ctx.now), ctx.now);
        }
    }

    /// After a series changes its rule (e.g. "this and following" trims it),
    /// exceptions that no longer fall on an occurrence become tombstones.
    fn cancel_orphaned_exceptions(&mut self, master_id: &str, ctx: &mut WriteCtx<'_>) {
        let Some(series) = self
            .get(master_id)
            .and_then(|m| check(&m.body).ok().flatten())
        else {
            return;
        };
        let occurrences = series.occurrences(ctx.horizon);
        let orphans: Vec<String> = self
            .events
            .values()
            .filter(|e| e.recurring_event_id() == Some(master_id) && !e.cancelled())
            .filter(|e| split_instance_id(e.id()).is_none_or(|(_, at)| !occurrences.contains(&at)))
            .map(|e| e.id().to_string())
            .collect();
        for id in orphans {
            self.cancel_stored(&id, ctx);
        }
    }

    /// Removes tombstones deleted before `cutoff`; sync tokens older than
    /// what was purged then answer 410.
    pub(super) fn purge_tombstones(&mut self, cutoff: DateTime<Utc>) {
        if self.oldest_tombstone.is_none_or(|oldest| oldest >= cutoff) {
            return; // nothing to purge: no scan
        }
        let mut purged = self.purged_rev;
        self.events.retain(|_, e| match e.deleted_at {
            Some(at) if at < cutoff => {
                purged = purged.max(e.rev);
                false
            }
            _ => true,
        });
        self.purged_rev = purged;
        self.oldest_tombstone = self.events.values().filter_map(|e| e.deleted_at).min();
    }

    /// The instants of a series' occurrences (for `singleEvents=true`).
    pub(super) fn occurrences(&self, master: &StoredEvent, horizon: DateTime<Utc>) -> Vec<When> {
        check(&master.body)
            .ok()
            .flatten()
            .map(|s| s.occurrences(horizon))
            .unwrap_or_default()
    }
}

/// The fields an update keeps from the stored event.
fn server_fields(old: &Map<String, Value>) -> Map<String, Value> {
    let keep = [
        "kind",
        "etag",
        "id",
        "created",
        "updated",
        "htmlLink",
        "creator",
        "organizer",
        "iCalUID",
        "recurringEventId",
        "originalStartTime",
        "sequence",
        "eventType",
    ];
    old.iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

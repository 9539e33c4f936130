//! The emulator's whole state. It lives behind one `std::sync::Mutex`
//! (see `mod.rs`): every API call is a short synchronous read-modify-write
//! and the lock is never held across an await, which keeps the fake simple
//! and every call linearizable, as Google's calls appear to a single client.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::calendar::{Calendar, WriteCtx};
use super::channels::{Channel, Delivery, Resource};
use super::error::ApiError;
use super::knobs::{FaultRule, Options, PushKnobs, QuotaKnobs};
use super::rng::{base32hex_id, Rng};
use super::token::Sealer;

/// One entry of a principal's calendarList.
#[derive(Debug, Clone)]
pub(super) struct ListEntry {
    pub rev: u64,
    pub deleted: bool,
    pub role: String,
    pub primary: bool,
}

/// A principal's calendarList, with its own revisions for sync tokens.
#[derive(Debug, Clone, Default)]
pub(super) struct CalendarList {
    pub rev: u64,
    pub entries: BTreeMap<String, ListEntry>,
}

/// A registered service account.
#[derive(Debug, Clone)]
pub(super) struct ServiceAccount {
    pub key_id: String,
    /// PKCS#1 RSAPublicKey, DER.
    pub public_key: Vec<u8>,
    /// Users it may impersonate (domain-wide delegation); `*` for any.
    pub subjects: HashSet<String>,
}

/// A registered OAuth client with refresh tokens of its users.
#[derive(Debug, Clone)]
pub(super) struct RefreshClient {
    pub secret: String,
    /// refresh token -> (user, scopes granted)
    pub tokens: HashMap<String, (String, Vec<String>)>,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(super) struct AccessToken {
    pub principal: String,
    /// The service account or OAuth client that obtained it.
    pub client: String,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// Call and ping counts, for tests, benches and the demo.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Calls by method (`events.list`, `events.watch`, `token`, ...).
    pub calls: BTreeMap<String, u64>,
    /// events.list calls by calendar id.
    pub list_calls_by_calendar: BTreeMap<String, u64>,
    /// Items returned by events.list, in total.
    pub list_items: u64,
    /// Notifications sent, by resource state (`sync`, `exists`).
    pub pings_sent: BTreeMap<String, u64>,
    /// Notifications the receiver answered with success.
    pub pings_delivered: u64,
    /// Notifications that failed for good (after retries).
    pub pings_failed: u64,
    /// Notifications dropped by the drop knob.
    pub pings_dropped: u64,
    /// Requests answered with an injected fault.
    pub faults_injected: u64,
}

pub(super) struct World {
    pub opts: Options,
    pub push: PushKnobs,
    pub quota: QuotaKnobs,
    pub faults: Vec<FaultRule>,
    pub rng: Rng,
    pub sealer: Sealer,
    pub etag_counter: u64,
    pub calendars: BTreeMap<String, Calendar>,
    pub lists: BTreeMap<String, CalendarList>,
    pub channels: BTreeMap<String, Channel>,
    pub used_channel_ids: HashSet<String>,
    pub service_accounts: BTreeMap<String, ServiceAccount>,
    pub refresh_clients: BTreeMap<String, RefreshClient>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub counters: Counters,
    /// The token endpoint's URL, the only JWT audience accepted.
    pub token_url: String,
    /// The root URL clients see (for resourceUri).
    pub api_root: String,
    user_window: HashMap<String, VecDeque<(Instant, u32)>>,
    project_window: VecDeque<(Instant, u32)>,
    /// Notifications go to the delivery task through this.
    pub outbox: mpsc::UnboundedSender<Delivery>,
    /// Set while a change is applied whose ping already went out.
    pub muted: bool,
    /// Chance of a short or empty page that still carries nextPageToken.
    pub short_page_rate: f64,
    /// events.list answers still to be sent with a broken first item (the
    /// `bad_item_id` fault).
    pub bad_item_ids_pending: u32,
}

impl World {
    pub(super) fn new(opts: Options, outbox: mpsc::UnboundedSender<Delivery>) -> Self {
        let mut rng = Rng::new(opts.seed);
        let secret = rng.next_u64().to_le_bytes();
        World {
            push: PushKnobs::default(),
            quota: QuotaKnobs::default(),
            faults: Vec::new(),
            sealer: Sealer::new(&secret),
            rng,
            etag_counter: 0,
            calendars: BTreeMap::new(),
            lists: BTreeMap::new(),
            channels: BTreeMap::new(),
            used_channel_ids: HashSet::new(),
            service_accounts: BTreeMap::new(),
            refresh_clients: BTreeMap::new(),
            access_tokens: HashMap::new(),
            counters: Counters::default(),
            token_url: String::new(),
            api_root: String::new(),
            user_window: HashMap::new(),
            project_window: VecDeque::new(),
            outbox,
            muted: false,
            short_page_rate: 0.0,
            bad_item_ids_pending: 0,
            opts,
        }
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    pub(super) fn horizon(&self) -> DateTime<Utc> {
        self.now()
            + chrono::Duration::from_std(self.opts.expansion_horizon)
                .unwrap_or(chrono::Duration::days(366))
    }

    pub(super) fn count(&mut self, method: &str) {
        *self.counters.calls.entry(method.to_string()).or_default() += 1;
    }

    /// Creates a principal's primary calendar on first sight.
    pub(super) fn ensure_principal(&mut self, email: &str) {
        if self.lists.contains_key(email) {
            return;
        }
        let now = self.now();
        let seed = self.rng.next_u64();
        self.calendars
            .entry(email.to_string())
            .or_insert_with(|| Calendar::new(email, email, "UTC", email, seed, now));
        self.lists
            .insert(email.to_string(), CalendarList::default());
        self.list_add(email, email, "owner", true);
    }

    /// Adds (or revives) a calendarList entry and notifies its watchers.
    pub(super) fn list_add(
        &mut self,
        principal: &str,
        calendar_id: &str,
        role: &str,
        primary: bool,
    ) {
        let list = self.lists.entry(principal.to_string()).or_default();
        list.rev += 1;
        let rev = list.rev;
        list.entries.insert(
            calendar_id.to_string(),
            ListEntry {
                rev,
                deleted: false,
                role: role.into(),
                primary,
            },
        );
        self.notify(&Resource::CalendarList(principal.to_string()));
    }

    /// Marks a calendarList entry deleted and notifies its watchers.
    pub(super) fn list_remove(&mut self, principal: &str, calendar_id: &str) {
        if let Some(list) = self.lists.get_mut(principal) {
            list.rev += 1;
            let rev = list.rev;
            if let Some(e) = list.entries.get_mut(calendar_id) {
                e.rev = rev;
                e.deleted = true;
            }
            self.notify(&Resource::CalendarList(principal.to_string()));
        }
    }

    /// `primary` means the principal's own calendar.
    pub(super) fn resolve(&self, principal: &str, calendar_id: &str) -> String {
        if calendar_id == "primary" {
            principal.to_string()
        } else {
            calendar_id.to_string()
        }
    }

    /// The calendar, if `principal` may see it; else 404 as Google answers.
    pub(super) fn calendar(
        &mut self,
        principal: &str,
        calendar_id: &str,
    ) -> Result<&mut Calendar, ApiError> {
        let id = self.resolve(principal, calendar_id);
        let now = self.now();
        let retention = chrono::Duration::from_std(self.opts.tombstone_retention)
            .unwrap_or(chrono::Duration::days(7));
        match self.calendars.get_mut(&id) {
            Some(c) if !c.deleted && c.role(principal).is_some() => {
                c.purge_tombstones(now - retention);
                Ok(c)
            }
            _ => Err(ApiError::not_found()),
        }
    }

    /// Splits the borrow: a calendar and a write context over the world.
    pub(super) fn with_calendar<T>(
        &mut self,
        principal: &str,
        calendar_id: &str,
        write: bool,
        f: impl FnOnce(&mut Calendar, &mut WriteCtx<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let now = self.now();
        let horizon = self.horizon();
        let id = self.resolve(principal, calendar_id);
        self.calendar(principal, &id)?;
        let cal = self
            .calendars
            .get_mut(&id)
            .ok_or_else(ApiError::not_found)?;
        if write
            && cal
                .role(principal)
                .is_some_and(|r| r == "reader" || r == "freeBusyReader")
        {
            return Err(ApiError::new(
                403,
                "calendar",
                "requiredAccessLevel",
                "You need to have writer access to this calendar.",
            ));
        }
        let rev_before = cal.rev;
        let mut ctx = WriteCtx {
            now,
            rng: &mut self.rng,
            etag_counter: &mut self.etag_counter,
            horizon,
            principal,
        };
        let out = f(cal, &mut ctx)?;
        if cal.rev != rev_before {
            self.notify(&Resource::Events(id));
        }
        Ok(out)
    }

    /// Creates a calendar owned by `owner`.
    pub(super) fn create_calendar(
        &mut self,
        owner: &str,
        id: Option<&str>,
        summary: &str,
        time_zone: &str,
    ) -> Result<String, ApiError> {
        if time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ApiError::invalid_param(
                "timeZone",
                format!("Invalid time zone: {time_zone}"),
            ));
        }
        self.ensure_principal(owner);
        let id = match id {
            Some(id) => id.to_string(),
            None => format!(
                "{}@group.calendar.google.com",
                base32hex_id(&mut self.rng, 26)
            ),
        };
        if self.calendars.get(&id).is_some_and(|c| !c.deleted) {
            return Err(ApiError::duplicate());
        }
        let seed = self.rng.next_u64();
        let now = self.now();
        self.calendars.insert(
            id.clone(),
            Calendar::new(&id, summary, time_zone, owner, seed, now),
        );
        self.list_add(owner, &id, "owner", false);
        Ok(id)
    }

    /// Gives `principal` access to a calendar and adds it to their list.
    pub(super) fn share_calendar(
        &mut self,
        calendar_id: &str,
        principal: &str,
        role: &str,
    ) -> Result<(), ApiError> {
        self.ensure_principal(principal);
        let cal = self
            .calendars
            .get_mut(calendar_id)
            .filter(|c| !c.deleted)
            .ok_or_else(ApiError::not_found)?;
        cal.shared.insert(principal.to_string(), role.to_string());
        self.list_add(principal, calendar_id, role, false);
        Ok(())
    }

    /// calendars.delete: the calendar disappears from every list; its
    /// events then answer 404.
    pub(super) fn delete_calendar(
        &mut self,
        principal: &str,
        calendar_id: &str,
    ) -> Result<(), ApiError> {
        let id = self.resolve(principal, calendar_id);
        let cal = self.calendar(principal, &id)?;
        if cal.owner != principal {
            return Err(ApiError::new(403, "global", "forbidden", "Forbidden"));
        }
        if id == principal {
            return Err(ApiError::bad_request(
                "The primary calendar cannot be deleted; use calendars.clear.",
            ));
        }
        cal.deleted = true;
        let members: Vec<String> = std::iter::once(cal.owner.clone())
            .chain(cal.shared.keys().cloned())
            .collect();
        for m in members {
            self.list_remove(&m, &id);
        }
        Ok(())
    }

    pub(super) fn calendar_resource(&self, cal: &Calendar) -> Value {
        json!({ "kind": "calendar#calendar", "etag": cal.etag(), "id": cal.id, "summary": cal.summary, "timeZone": cal.time_zone })
    }

    /// Sliding-minute quotas; `cost` units (patch costs 3).
    pub(super) fn charge_quota(&mut self, principal: &str, cost: u32) -> Result<(), ApiError> {
        let now = Instant::now();
        let minute = std::time::Duration::from_secs(60);
        let prune = |w: &mut VecDeque<(Instant, u32)>| {
            while w
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= minute)
            {
                w.pop_front();
            }
        };
        prune(&mut self.project_window);
        let project_used: u32 = self.project_window.iter().map(|(_, c)| c).sum();
        if project_used + cost > self.quota.per_project_per_minute {
            return Err(ApiError::rate_limit(self.quota.project_status));
        }
        let user = self.user_window.entry(principal.to_string()).or_default();
        prune(user);
        let user_used: u32 = user.iter().map(|(_, c)| c).sum();
        if user_used + cost > self.quota.per_user_per_minute {
            return Err(ApiError::user_rate_limit());
        }
        user.push_back((now, cost));
        self.project_window.push_back((now, cost));
        Ok(())
    }

    /// The fault to inject into a call of `method`, if any.
    pub(super) fn pick_fault(&mut self, method: &str) -> Option<FaultRule> {
        for i in 0..self.faults.len() {
            let rule = &self.faults[i];
            if rule.method.as_deref().is_some_and(|m| m != method) || rule.remaining == Some(0) {
                continue;
            }
            let rate = rule.rate;
            if self.rng.chance(rate) {
                let rule = &mut self.faults[i];
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                self.counters.faults_injected += 1;
                return Some(self.faults[i].clone());
            }
        }
        None
    }
}

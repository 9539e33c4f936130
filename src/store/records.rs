//! The values kept in the store: plain serde structs, no sled types.

use serde::{Deserialize, Serialize};

use crate::rawjson::RawJson;
use crate::secret::Secret;
use crate::time::Timestamp;

/// Identifies one followed calendar: the account's name and Google's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CalendarKey {
    pub account: String,
    pub calendar_id: String,
}

impl CalendarKey {
    pub fn new(account: impl Into<String>, calendar_id: impl Into<String>) -> Self {
        CalendarKey {
            account: account.into(),
            calendar_id: calendar_id.into(),
        }
    }
}

impl std::fmt::Display for CalendarKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account, self.calendar_id)
    }
}

/// Sync state of one calendar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalendarState {
    /// Google's `nextSyncToken`; `None` means the next pass is a full sync.
    pub sync_token: Option<String>,
    /// Generation of the current (or last) full sync; events listed by it
    /// carry the same number, so the sweep finds the ones not listed.
    pub generation: u64,
    /// Live (not cancelled) events stored for the calendar; kept by the
    /// store as it writes them, whatever a caller puts here.
    pub events: u64,
    /// When the last pass succeeded.
    pub last_sync_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// The id of a stored event body: a counter that only grows, so bodies
/// are written in key order. Bodies never change once written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct BodyId(u64);

impl BodyId {
    pub const fn new(n: u64) -> BodyId {
        BodyId(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for BodyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event body in a version or record being written: one the store
/// holds already (a version kept, an update's `previous`), or new JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Stored(BodyId),
    New(RawJson),
}

/// The version of one event: its head as the store keeps it (the body is
/// kept apart, once, and named by id), or one being written.
#[derive(Debug, Clone, PartialEq)]
pub struct EventVersion {
    pub id: String,
    pub etag: Option<String>,
    pub sequence: Option<i64>,
    pub updated: Option<String>,
    pub status: Option<String>,
    /// The full-sync generation that last listed it.
    pub generation: u64,
    /// The seq of its latest change record, set by the store as it writes
    /// the page.
    pub last_change: Seq,
    /// The Event resource as Google returned it: always
    /// [`Body::Stored`] when read from the store.
    pub body: Body,
}

/// Whether an event is shown. Google marks a deleted event, or a hidden
/// occurrence of a series, `"status": "cancelled"`; every other status
/// (confirmed, tentative, none) is a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Live,
    Cancelled,
}

impl EventStatus {
    pub fn of(status: Option<&str>) -> EventStatus {
        match status {
            Some("cancelled") => EventStatus::Cancelled,
            _ => EventStatus::Live,
        }
    }
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// A change record's place in the feed. Seqs only grow, and once a reader
/// has seen one it names the same record forever; `Seq::ZERO` is before
/// the first record (the cursor of a reader that has seen nothing).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);
    pub const MAX: Seq = Seq(u64::MAX);

    pub const fn new(n: u64) -> Seq {
        Seq(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The seq after this one.
    pub const fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }

    /// How many records lie in `(earlier, self]`.
    pub const fn since(self, earlier: Seq) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One entry of the change feed (the contract of architecture.md §4).
/// `B` is how the bodies of `event` and `previous` are held: JSON as the
/// feed serves them, [`Body`] in a page being written, [`BodyId`] in the
/// store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord<B = RawJson> {
    pub seq: Seq,
    pub account: String,
    pub calendar_id: String,
    pub event_id: String,
    pub change: ChangeKind,
    pub etag: Option<String>,
    pub sequence: Option<i64>,
    pub updated: Option<String>,
    pub changed_fields: Vec<String>,
    pub event: B,
    pub previous: Option<B>,
    pub detected_at: Timestamp,
}

impl<B> ChangeRecord<B> {
    /// The same record with its bodies mapped by `f`.
    pub fn map_bodies<C, E>(
        self,
        mut f: impl FnMut(B) -> Result<C, E>,
    ) -> Result<ChangeRecord<C>, E> {
        Ok(ChangeRecord {
            seq: self.seq,
            account: self.account,
            calendar_id: self.calendar_id,
            event_id: self.event_id,
            change: self.change,
            etag: self.etag,
            sequence: self.sequence,
            updated: self.updated,
            changed_fields: self.changed_fields,
            event: f(self.event)?,
            previous: self.previous.map(&mut f).transpose()?,
            detected_at: self.detected_at,
        })
    }
}

/// Which change records a reader or sink wants: those of any of
/// `accounts` (all when empty) and of any of `calendars` (all when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub accounts: Vec<String>,
    pub calendars: Vec<String>,
}

impl Filter {
    /// Whether it keeps every record.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.calendars.is_empty()
    }

    pub fn matches(&self, account: &str, calendar_id: &str) -> bool {
        (self.accounts.is_empty() || self.accounts.iter().any(|a| a == account))
            && (self.calendars.is_empty() || self.calendars.iter().any(|c| c == calendar_id))
    }
}

/// A read of the feed ([`super::Store::read_feed`]).
#[derive(Debug)]
pub enum FeedRead {
    /// The records wanted, and the last seq looked at (the cursor to
    /// continue after; it passes records the filter left out).
    Records(Vec<ChangeRecord>, Seq),
    /// Retention removed records after the cursor, up to this seq: the
    /// reader missed them.
    Gone(Seq),
}

/// Life of a push channel as we see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    /// Persisted, `events.watch` not answered yet.
    Pending,
    /// Watch answered; pings expected.
    Active,
    /// Replaced; `channels.stop` not yet acknowledged.
    Stopping,
}

/// A push channel we created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub id: ChannelId,
    pub calendar: CalendarKey,
    /// The secret Google echoes in `X-Goog-Channel-Token`.
    pub token: Secret,
    pub resource_id: Option<String>,
    /// Milliseconds since the epoch, as Google returned it.
    pub expiration_ms: Option<i64>,
    pub state: ChannelState,
    /// Set once the `sync` ping arrived.
    pub confirmed: bool,
    /// The `hook.public_url` it was created for (None: made before this
    /// was recorded). A channel for another address is replaced.
    #[serde(default)]
    pub address: Option<String>,
}

/// Everything one page of `events.list` changes (see `page.rs` for how it
/// is written).
#[derive(Debug, Clone)]
pub struct PageWrite {
    pub calendar: CalendarKey,
    /// Events to insert or replace.
    pub upserts: Vec<EventVersion>,
    /// Event ids to remove.
    pub deletes: Vec<String>,
    /// Change records, `seq` assigned by the feed writer.
    pub changes: Vec<ChangeRecord<Body>>,
    /// The calendar's new state (the sync token on the last page).
    pub state: CalendarState,
}

/// A watch channel's id, as we chose it when creating the channel (a
/// random UUID) and Google echoes it in `X-Goog-Channel-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(String);

impl ChannelId {
    /// A new id: a random UUID, hyphenated, lower case.
    pub fn random() -> ChannelId {
        ChannelId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ChannelId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ChannelId {
    fn from(s: &str) -> Self {
        ChannelId(s.to_string())
    }
}

impl From<String> for ChannelId {
    fn from(s: String) -> Self {
        ChannelId(s)
    }
}

impl PartialEq<str> for ChannelId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// Why and since when a sink is disabled ([`super::Store::disable_sink`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkDisabled {
    pub since: Timestamp,
    pub reason: String,
}

/// A sink's state beside its cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkState {
    /// Set while the sink is disabled.
    pub disabled: Option<SinkDisabled>,
    /// When it was last enabled again: its lag counts from then at the
    /// earliest, so a sink reset after a long outage gets `max_lag` to
    /// catch up instead of being disabled again at once.
    pub enabled_at: Option<Timestamp>,
}

//! Event heads: the small record the `events` tree keeps per event (its
//! version fields and the id of its body), and reading them back.

use serde::{Deserialize, Serialize};

use super::{decode, keys, Body, BodyId, CalendarKey, EventVersion, Seq, Store, StoreError};

/// An event as the `events` tree stores it (the id is the key's tail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Head {
    pub etag: Option<String>,
    pub sequence: Option<i64>,
    pub updated: Option<String>,
    pub status: Option<String>,
    pub generation: u64,
    pub last_change: Seq,
    pub body: BodyId,
}

impl Head {
    pub(super) fn of(v: &EventVersion, body: BodyId) -> Head {
        Head {
            etag: v.etag.clone(),
            sequence: v.sequence,
            updated: v.updated.clone(),
            status: v.status.clone(),
            generation: v.generation,
            last_change: v.last_change,
            body,
        }
    }

    pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<Head, StoreError> {
        decode("events", key, bytes)
    }

    fn into_version(self, id: String) -> EventVersion {
        EventVersion {
            id,
            etag: self.etag,
            sequence: self.sequence,
            updated: self.updated,
            status: self.status,
            generation: self.generation,
            last_change: self.last_change,
            body: Body::Stored(self.body),
        }
    }
}

impl Store {
    /// One event's version (its body as [`Body::Stored`]).
    pub fn event(
        &self,
        key: &CalendarKey,
        event_id: &str,
    ) -> Result<Option<EventVersion>, StoreError> {
        let t = self.t()?;
        let k = keys::event(key, event_id);
        t.events
            .get(&k)?
            .map(|v| Ok(Head::decode(&k, &v)?.into_version(event_id.to_string())))
            .transpose()
    }

    /// Every stored event of a calendar, in id order, read lazily.
    pub fn events(
        &self,
        key: &CalendarKey,
    ) -> Box<dyn Iterator<Item = Result<EventVersion, StoreError>> + Send> {
        let prefix = keys::calendar(key);
        let skip = prefix.len();
        match self.t() {
            Ok(t) => Box::new(t.events.scan_prefix(prefix).map(move |item| {
                let (k, v) = item?;
                let id = String::from_utf8(k[skip..].to_vec()).map_err(|_| StoreError::Decode {
                    tree: "events",
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "the event id is not UTF-8".into(),
                })?;
                Ok(Head::decode(&k, &v)?.into_version(id))
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// Whether any event of the calendar is stored.
    pub fn has_events(&self, key: &CalendarKey) -> Result<bool, StoreError> {
        let t = self.t()?;
        Ok(t.events
            .scan_prefix(keys::calendar(key))
            .next()
            .transpose()?
            .is_some())
    }
}

//! What each sink's task last did, for `/v1/sinks`: each task writes its
//! own entry, the API only reads.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::store::Seq;
use crate::time::Timestamp;

/// One sink as `/v1/sinks` shows it (without the lag, which the API adds
/// from the feed's head).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SinkStatus {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The last seq the sink acknowledged (or its filters passed over).
    pub(crate) cursor: Seq,
    /// `delivering`, `retrying`, `disabled` or `failed`.
    pub(crate) state: &'static str,
    /// When the oldest record the sink has not acknowledged was detected
    /// (None when it has them all): its lag in time.
    pub(crate) pending_since: Option<Timestamp>,
    pub(crate) last_success: Option<Timestamp>,
    pub(crate) last_error: Option<String>,
}

impl SinkStatus {
    /// How far the sink is behind a feed whose head is `head`: in records,
    /// and in seconds since its oldest unacknowledged record was detected.
    pub(crate) fn lag(&self, head: Seq, now: chrono::DateTime<chrono::Utc>) -> (u64, u64) {
        let seconds = self.pending_since.map_or(0, |t| {
            u64::try_from(now.signed_duration_since(t.as_datetime()).num_seconds()).unwrap_or(0)
        });
        (head.since(self.cursor), seconds)
    }
}

#[derive(Clone, Default)]
pub(crate) struct SinkBoard(Arc<RwLock<BTreeMap<String, SinkStatus>>>);

impl SinkBoard {
    pub(crate) fn all(&self) -> Vec<SinkStatus> {
        self.0
            .read()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn remove(&self, name: &str) {
        if let Ok(mut b) = self.0.write() {
            b.remove(name);
        }
    }

    pub(super) fn put(&self, status: SinkStatus) {
        if let Ok(mut b) = self.0.write() {
            b.insert(status.name.clone(), status);
        }
    }

    pub(super) fn update(&self, name: &str, f: impl FnOnce(&mut SinkStatus)) {
        if let Ok(mut b) = self.0.write() {
            if let Some(s) = b.get_mut(name) {
                f(s);
            }
        }
    }
}

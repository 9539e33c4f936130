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
    /// `delivering`, `retrying`, `disabled` or `not_delivered`.
    pub(crate) state: &'static str,
    pub(crate) last_success: Option<Timestamp>,
    pub(crate) last_error: Option<String>,
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

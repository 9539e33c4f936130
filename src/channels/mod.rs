//! Watch-channel lifecycle.
//!
//! Owns Google push channels: creates one per calendar, replaces it before
//! it expires (a new channel first, then the old one is stopped), and keeps
//! the in-memory [`ChannelIndex`] that the hook checks pings against in step
//! with the store. Never syncs events; after it (re)creates a channel it
//! pokes the calendar's trigger so the engine catches up on missed pings.

mod scheduler;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use tokio::sync::mpsc;

pub(crate) use scheduler::Scheduler;

use crate::accounts::Watched;
use crate::secret::Secret;
use crate::store::ChannelId;

/// Whether `id` has the shape of the ids `ChannelId::random` makes. An
/// unknown channel of another shape was never ours, so it is not worth a
/// channels.stop call (forged pings must not spend the account's quota).
pub(crate) fn plausibly_ours(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| {
        u.get_version() == Some(uuid::Version::Random) && u.hyphenated().to_string() == id
    })
}

/// What the hook needs to know about one of our channels.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    /// Decided once here, not on every ping.
    pub watched: Watched,
    pub token: Secret,
    pub resource_id: Option<String>,
}

/// Our live channels by id, and the collections they watch. Written only
/// by the scheduler task; read by the hook on every ping (hence a
/// read-mostly lock, never held across await). Every lookup is a hash
/// lookup: nothing a ping does scans the channels.
#[derive(Clone, Default)]
pub(crate) struct ChannelIndex(Arc<RwLock<Maps>>);

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, IndexEntry>,
    /// Google's resource id -> the account watching it and how many of
    /// our channels (a calendar's old and new one during a renewal) do.
    by_resource: HashMap<String, (String, usize)>,
}

impl Maps {
    fn unlink(&mut self, entry: &IndexEntry) {
        let Some(rid) = entry.resource_id.as_deref() else {
            return;
        };
        if let Some((_, n)) = self.by_resource.get_mut(rid) {
            *n -= 1;
            if *n == 0 {
                self.by_resource.remove(rid);
            }
        }
    }
}

impl ChannelIndex {
    pub(crate) fn get(&self, id: &str) -> Option<IndexEntry> {
        self.0.read().ok()?.by_id.get(id).cloned()
    }

    /// The account of our channels on the collection `resource_id`, if
    /// any channel of ours watches it.
    pub(crate) fn resource_owner(&self, resource_id: &str) -> Option<String> {
        let maps = self.0.read().ok()?;
        maps.by_resource.get(resource_id).map(|(a, _)| a.clone())
    }

    pub(crate) fn insert(&self, id: &str, entry: IndexEntry) {
        if let Ok(mut m) = self.0.write() {
            if let Some(rid) = entry.resource_id.as_deref() {
                let account = entry.watched.key().account;
                m.by_resource
                    .entry(rid.to_string())
                    .or_insert((account, 0))
                    .1 += 1;
            }
            if let Some(old) = m.by_id.insert(id.to_string(), entry) {
                m.unlink(&old);
            }
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut m) = self.0.write() {
            if let Some(old) = m.by_id.remove(id) {
                m.unlink(&old);
            }
        }
    }
}

/// Messages to the scheduler task.
#[derive(Debug)]
pub(crate) enum ChannelMsg {
    /// Reconcile every calendar now (cron tick).
    Check,
    /// A ping for a channel id we no longer own, on a collection we know.
    Orphan { id: ChannelId, resource_id: String },
    /// Calendars were removed from the configuration: stop their channels.
    Removed,
}

/// Sends to the scheduler without ever blocking the caller (the hook).
#[derive(Clone)]
pub(crate) struct ChannelsHandle {
    tx: mpsc::Sender<ChannelMsg>,
    confirmed: mpsc::UnboundedSender<ChannelId>,
}

impl ChannelsHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<ChannelMsg>,
        confirmed: mpsc::UnboundedSender<ChannelId>,
    ) -> Self {
        ChannelsHandle { tx, confirmed }
    }

    /// Best effort: a full queue drops the message, and each kind's loss is
    /// repaired later: a dropped `Check` finds one pending already, the
    /// next check stops the channels of `Removed` calendars, and an
    /// `Orphan` keeps pinging until its stop gets through.
    pub(crate) fn send(&self, msg: ChannelMsg) {
        if let Err(e) = self.tx.try_send(msg) {
            tracing::debug!(error = %e, "channel scheduler queue full; message dropped");
        }
    }

    /// The `sync` message of channel `id` arrived. Never dropped: nothing
    /// would confirm the channel again. Unbounded, yet bounded by what we
    /// made: the hook sends this only for a ping whose channel id and
    /// token match a channel we created, and Google sends one per channel.
    pub(crate) fn confirmed(&self, id: ChannelId) {
        // Fails only once the scheduler has stopped, with the daemon.
        let _ = self.confirmed.send(id);
    }
}

/// A channel is due for replacement once `now >= expiration - renew_before`.
pub(crate) fn is_due(now_ms: i64, expiration_ms: i64, renew_before: Duration) -> bool {
    now_ms >= expiration_ms.saturating_sub(renew_before.as_millis() as i64)
}

/// 32 random bytes, base64url: the secret Google echoes in every ping.
pub(crate) fn new_token() -> Secret {
    let mut bytes = [0u8; 32];
    // SystemRandom only fails when the OS has no randomness at all.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the OS provides randomness");
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_exactly_at_expiration_minus_renew_before() {
        let renew = Duration::from_secs(60);
        assert!(!is_due(1_000_000 - 60_001, 1_000_000, renew));
        assert!(is_due(1_000_000 - 60_000, 1_000_000, renew));
        assert!(is_due(2_000_000, 1_000_000, renew), "expired is due");
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, b);
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn only_ids_of_our_shape_are_plausibly_ours() {
        assert!(plausibly_ours(&crate::store::ChannelId::random()));
        for not_ours in [
            "flood-id",
            "",
            "00000000-0000-0000-0000-000000000000",
            "6F9619FF-8B86-4011-B42D-00C04FC964FF",
            "6f9619ff8b864011b42d00c04fc964ff",
        ] {
            assert!(!plausibly_ours(not_ours), "{not_ours}");
        }
    }
}

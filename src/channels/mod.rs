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

    /// What our live channels (those Google answered) watch.
    pub(crate) fn watched(&self) -> Vec<Watched> {
        self.0.read().map_or_else(
            |_| Vec::new(),
            |m| {
                m.by_id
                    .values()
                    .filter(|e| e.resource_id.is_some())
                    .map(|e| e.watched.clone())
                    .collect()
            },
        )
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

/// When channels are replaced: `renew_before` ahead of expiry, and up to
/// a spread earlier (see [`is_due`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Renewal {
    pub renew_before: Duration,
    /// The lifetime asked for (`channels.ttl`).
    pub ttl: Duration,
}

/// A channel is due for replacement `renew_before` and a spread ahead of
/// its expiration. The spread is a fixed share, drawn from the channel's
/// id, of half of `renew_before` (or of what `ttl` leaves beyond it, if
/// less).
/// Channels made in one start-up burst all expire within minutes of each
/// other; spread this way, their renewals (a watch and a stop each) are
/// strewn over hours instead of coming due at the same check, and each
/// channel keeps its place from check to check.
pub(crate) fn is_due(now_ms: i64, expiration_ms: i64, r: Renewal, id: &str) -> bool {
    let before = r.renew_before.as_millis() as i64;
    let room = (r.ttl.as_millis() as i64 - before).max(0);
    let spread = (before.min(room) / 2) as f64 * unit_hash(id);
    now_ms >= expiration_ms.saturating_sub(before + spread as i64)
}

/// `id` hashed (FNV-1a) to a number in [0, 1).
fn unit_hash(id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
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
    fn due_within_the_renew_window_and_spread_over_its_first_half() {
        let hour = 3_600_000i64;
        let renew = Renewal {
            renew_before: Duration::from_millis(hour as u64),
            ttl: Duration::from_millis(24 * hour as u64),
        };
        let expires = 100 * hour;
        // A start-up burst: 1000 channels expiring at the same moment.
        let ids: Vec<String> = (0..1000)
            .map(|_| crate::store::ChannelId::random().to_string())
            .collect();
        let due_at = |id: &str| {
            (expires - 2 * hour..=expires)
                .step_by(60_000)
                .find(|&t| is_due(t, expires, renew, id))
                .expect("due before it expires")
        };
        let mut per_quarter_hour = [0usize; 2 * 4];
        for id in &ids {
            let at = due_at(id);
            assert!(at <= expires - hour, "due by expiration - renew_before");
            assert!(
                at >= expires - hour - hour / 2,
                "not before half a renew_before earlier"
            );
            per_quarter_hour[((expires - hour - at) / (hour / 4)).min(7) as usize] += 1;
            assert!(is_due(at + 1, expires, renew, id), "stays due");
        }
        // Strewn over the half hour: no quarter of it has most of them.
        assert!(
            per_quarter_hour[..2]
                .iter()
                .all(|&n| (350..650).contains(&n)),
            "{per_quarter_hour:?}"
        );
        assert!(
            is_due(expires + 1, expires, renew, &ids[0]),
            "expired is due"
        );
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

//! Key encoding. Every component but the last is length-prefixed (u32 big
//! endian), so no calendar id, whatever it contains (`/`, `@`, `#`, NUL,
//! non-ASCII), can make two keys collide or one calendar's prefix match
//! another's events.

use super::records::{BodyId, CalendarKey, Seq};

fn push_component(out: &mut Vec<u8>, part: &str) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// Key of a calendar in the `calendars` tree, and prefix of its events.
pub(super) fn calendar(key: &CalendarKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.account.len() + key.calendar_id.len());
    push_component(&mut out, &key.account);
    push_component(&mut out, &key.calendar_id);
    out
}

/// Key of one event in the `events` tree.
pub(super) fn event(key: &CalendarKey, event_id: &str) -> Vec<u8> {
    let mut out = calendar(key);
    out.extend_from_slice(event_id.as_bytes());
    out
}

/// Decodes a `calendars` key back into its parts.
pub(super) fn decode_calendar(bytes: &[u8]) -> Option<CalendarKey> {
    let (account, rest) = take_component(bytes)?;
    let (calendar_id, rest) = take_component(rest)?;
    rest.is_empty()
        .then(|| CalendarKey::new(account, calendar_id))
}

fn take_component(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let part = bytes.get(4..4 + len)?;
    Some((std::str::from_utf8(part).ok()?, &bytes[4 + len..]))
}

/// Key of a change record: big-endian so that sled's order is `seq` order.
pub(super) fn seq(seq: Seq) -> [u8; 8] {
    seq.get().to_be_bytes()
}

/// A seq stored big-endian (a `changes` key, a cursor, the meta floors);
/// `None` when it is not 8 bytes.
pub(super) fn decode_seq(bytes: &[u8]) -> Option<Seq> {
    bytes.try_into().ok().map(u64::from_be_bytes).map(Seq::new)
}

/// Key of a body: big-endian, so bodies are written in key order.
pub(super) fn body(id: BodyId) -> [u8; 8] {
    id.get().to_be_bytes()
}

/// A `bodies` key back into its id.
pub(super) fn decode_body(bytes: &[u8]) -> Option<BodyId> {
    bytes
        .try_into()
        .ok()
        .map(u64::from_be_bytes)
        .map(BodyId::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_ids_never_collide_or_prefix_each_other() {
        let ids = [
            "a/b",
            "a",
            "a@b#c",
            "a\0b",
            "ümlaut@group.calendar.google.com",
            "",
            "a/b/c",
            "b",
        ];
        let accounts = ["x", "x/a", ""];
        let mut seen = std::collections::HashSet::new();
        for acc in accounts {
            for id in ids {
                let k = CalendarKey::new(acc, id);
                assert!(seen.insert(calendar(&k)), "collision for {acc:?}/{id:?}");
                assert_eq!(decode_calendar(&calendar(&k)), Some(k.clone()));
                for other_acc in accounts {
                    for other in ids {
                        let o = CalendarKey::new(other_acc, other);
                        if o != k {
                            assert!(
                                !event(&o, "evt").starts_with(&calendar(&k)),
                                "{o:?} in {k:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

//! The planner: one page of listed events, against what the store held
//! before the page, to the versions to store and the change records to
//! append. Pure: no store, no clock, no async; the caller reads the stored
//! versions first ([`wanted`]) and passes the time in.

use std::collections::{HashMap, HashSet};

use crate::google::EventHead;
use crate::rawjson::RawJson;
use crate::store::{
    Body, BodyId, CalendarKey, ChangeKind, ChangeRecord, EventStatus, EventVersion,
};
use crate::time::Timestamp;

use super::changed_fields;

/// The writes and records one page produces.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub upserts: Vec<EventVersion>,
    pub deletes: Vec<String>,
    pub changes: Vec<ChangeRecord<Body>>,
    /// Every id this page listed.
    pub touched: HashSet<String>,
}

/// An item that cannot be planned: what its `id` was instead of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unusable(pub &'static str);

/// The ids whose stored versions [`plan`] needs: every listed event, and
/// the series master of every cancelled occurrence.
pub(super) fn wanted<'a>(heads: impl IntoIterator<Item = &'a EventHead>) -> HashSet<String> {
    heads
        .into_iter()
        .flat_map(|h| {
            let master = h
                .recurring_event_id
                .clone()
                .filter(|_| EventStatus::of(h.status.as_deref()) == EventStatus::Cancelled);
            h.id.clone().into_iter().chain(master)
        })
        .collect()
}

/// The stored bodies [`plan`] needs, of the `stored` versions: those of
/// live events listed with another etag, whose fields it diffs.
pub(super) fn bodies_wanted<'a>(
    heads: impl IntoIterator<Item = &'a EventHead>,
    stored: &HashMap<String, EventVersion>,
) -> Vec<BodyId> {
    heads
        .into_iter()
        .filter_map(|h| {
            let old = stored.get(h.id.as_deref()?)?;
            let live = EventStatus::of(old.status.as_deref()) == EventStatus::Live;
            match &old.body {
                Body::Stored(id) if live && old.etag != h.etag => Some(*id),
                _ => None,
            }
        })
        .collect()
}

/// Plans one page. `stored` holds the versions of [`wanted`] ids the store
/// has (absent: never seen, or removed), and `bodies` the stored bodies of
/// [`bodies_wanted`]; `generation` is set in full syncs, where every listed
/// event is stamped with it; `now` is `detected_at`.
pub(super) fn plan(
    key: &CalendarKey,
    items: Vec<(EventHead, RawJson)>,
    stored: &HashMap<String, EventVersion>,
    bodies: &HashMap<BodyId, RawJson>,
    generation: Option<u64>,
    now: Timestamp,
) -> Result<Plan, Unusable> {
    let mut plan = Plan::default();
    // Ids already handled in this page (Google lists each once, but a page
    // must never produce two records from one stale lookup).
    let mut in_page: HashMap<String, Option<EventVersion>> = HashMap::new();
    for (head, item) in items {
        let Some(id) = head.id.clone() else {
            return Err(Unusable(match item.to_value().get("id") {
                None => "no id",
                Some(_) => "an id that is not a string",
            }));
        };
        let old = match in_page.get(&id) {
            Some(v) => v.clone(),
            None => stored.get(&id).cloned(),
        };
        let listed = Listed {
            key,
            id: &id,
            head: &head,
            item,
            bodies,
            now,
        };
        let after = if EventStatus::of(head.status.as_deref()) == EventStatus::Cancelled {
            let of_live_series = head
                .recurring_event_id
                .as_deref()
                .and_then(|m| stored.get(m))
                .is_some_and(|m| EventStatus::of(m.status.as_deref()) == EventStatus::Live);
            listed.cancelled(old, of_live_series, generation, &mut plan);
            None
        } else {
            match listed.live(old, generation, &mut plan) {
                Some(v) => Some(v),
                // Unchanged and not restamped: not this page's business.
                None => continue,
            }
        };
        in_page.insert(id, after);
    }
    plan.touched = in_page.into_keys().collect();
    Ok(plan)
}

/// One listed item, with what its versions and records are made of.
struct Listed<'a> {
    key: &'a CalendarKey,
    id: &'a str,
    head: &'a EventHead,
    item: RawJson,
    bodies: &'a HashMap<BodyId, RawJson>,
    now: Timestamp,
}

impl Listed<'_> {
    fn version(&self, generation: u64) -> EventVersion {
        EventVersion {
            id: self.id.to_string(),
            etag: self.head.etag.clone(),
            sequence: self.head.sequence,
            updated: self.head.updated.clone(),
            status: self.head.status.clone(),
            generation,
            last_change: crate::store::Seq::ZERO, // set by the store
            body: Body::New(self.item.clone()),
        }
    }

    fn record(
        &self,
        change: ChangeKind,
        previous: Option<Body>,
        changed_fields: Vec<String>,
    ) -> ChangeRecord<Body> {
        ChangeRecord {
            seq: crate::store::Seq::ZERO, // assigned by the feed writer
            account: self.key.account.clone(),
            calendar_id: self.key.calendar_id.clone(),
            event_id: self.id.to_string(),
            change,
            etag: self.head.etag.clone(),
            sequence: self.head.sequence,
            updated: self.head.updated.clone(),
            changed_fields,
            event: Body::New(self.item.clone()),
            previous,
            detected_at: self.now,
        }
    }

    /// The top-level fields that differ between `old` and this item
    /// (every field, if the caller did not read `old`).
    fn changed_fields(&self, old: &Body) -> Vec<String> {
        let old = match old {
            Body::New(json) => Some(json),
            Body::Stored(id) => self.bodies.get(id),
        };
        let old = old.map_or(serde_json::Value::Null, RawJson::to_value);
        changed_fields(&old, &self.item.to_value())
    }

    /// A cancelled item: a deleted event, or a hidden occurrence of a
    /// series (kept, so that it is not reported again).
    fn cancelled(
        &self,
        old: Option<EventVersion>,
        of_live_series: bool,
        generation: Option<u64>,
        plan: &mut Plan,
    ) {
        match old {
            // Known already as a hidden occurrence.
            Some(old) if EventStatus::of(old.status.as_deref()) == EventStatus::Cancelled => {
                if let Some(g) = generation.filter(|g| *g != old.generation) {
                    plan.upserts.push(EventVersion {
                        generation: g,
                        ..old
                    });
                }
            }
            Some(old) => {
                plan.changes
                    .push(self.record(ChangeKind::Deleted, Some(old.body), vec![]));
                if of_live_series {
                    plan.upserts
                        .push(self.version(generation.unwrap_or(old.generation)));
                } else {
                    plan.deletes.push(self.id.to_string());
                }
            }
            // One occurrence of a series we follow disappeared: a real
            // change; keep it as a hidden occurrence.
            None if of_live_series => {
                plan.changes
                    .push(self.record(ChangeKind::Deleted, None, vec![]));
                plan.upserts.push(self.version(generation.unwrap_or(0)));
            }
            // Deleted before we ever saw it: nothing to report.
            None => {}
        }
    }

    /// A live item: created, updated, unchanged (restamped in a full
    /// sync), or a hidden occurrence coming back. Returns the version it
    /// leaves stored, None when the page does not touch it.
    fn live(
        &self,
        old: Option<EventVersion>,
        generation: Option<u64>,
        plan: &mut Plan,
    ) -> Option<EventVersion> {
        let v = match old {
            None => {
                plan.changes
                    .push(self.record(ChangeKind::Created, None, vec![]));
                self.version(generation.unwrap_or(0))
            }
            Some(old) if old.etag == self.head.etag => {
                // Unchanged. A full sync still stamps it as seen.
                let g = generation.filter(|g| *g != old.generation)?;
                EventVersion {
                    generation: g,
                    ..old
                }
            }
            Some(old) => {
                let (kind, fields) = match EventStatus::of(old.status.as_deref()) {
                    EventStatus::Cancelled => (ChangeKind::Created, vec![]),
                    EventStatus::Live => (ChangeKind::Updated, self.changed_fields(&old.body)),
                };
                let previous = (kind == ChangeKind::Updated).then_some(old.body);
                plan.changes.push(self.record(kind, previous, fields));
                self.version(generation.unwrap_or(old.generation))
            }
        };
        plan.upserts.push(v.clone());
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn now() -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00.000Z").expect("a time")
    }

    fn body(id: &str, etag: &str, status: &str, summary: &str, series: Option<&str>) -> Value {
        let mut v = json!({"kind": "calendar#event", "id": id, "etag": etag, "status": status, "summary": summary});
        if let Some(m) = series {
            v["recurringEventId"] = json!(m);
        }
        v
    }

    /// A stored version of the full sync with generation 4.
    fn stored(id: &str, etag: &str, status: &str, summary: &str) -> EventVersion {
        EventVersion {
            id: id.into(),
            etag: Some(etag.into()),
            sequence: Some(0),
            updated: None,
            status: Some(status.into()),
            generation: 4,
            last_change: crate::store::Seq::new(7),
            // As a page that wrote it before holds it: the planner diffs
            // it as it would a body read for it.
            body: Body::New(body(id, etag, status, summary, None).into()),
        }
    }

    fn item(v: Value) -> (EventHead, RawJson) {
        let raw = RawJson::from(v);
        (EventHead::of(&raw), raw)
    }

    /// The plan, as one line: records; upserts with their generation;
    /// deletes.
    fn show(p: &Plan) -> String {
        let records: Vec<String> = p
            .changes
            .iter()
            .map(|c| {
                let kind = format!("{:?}", c.change).to_lowercase();
                let fields = if c.changed_fields.is_empty() {
                    String::new()
                } else {
                    format!("[{}]", c.changed_fields.join(","))
                };
                let prev = if c.previous.is_some() { "+prev" } else { "" };
                format!("{kind} {}{fields}{prev}", c.event_id)
            })
            .collect();
        let ups: Vec<String> = p
            .upserts
            .iter()
            .map(|v| format!("{}@{}", v.id, v.generation))
            .collect();
        let or_dash = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(" ")
            }
        };
        format!(
            "{} | up {} | del {}",
            or_dash(records),
            or_dash(ups),
            or_dash(p.deletes.clone())
        )
    }

    fn run(store: &[EventVersion], items: &[Value], generation: Option<u64>) -> String {
        let key = CalendarKey::new("a", "c");
        let items: Vec<_> = items.iter().cloned().map(item).collect();
        let all: HashMap<String, EventVersion> =
            store.iter().map(|v| (v.id.clone(), v.clone())).collect();
        // Only what `wanted` names is looked up, as the caller does.
        let want = wanted(items.iter().map(|(h, _)| h));
        let stored = all
            .into_iter()
            .filter(|(id, _)| want.contains(id))
            .collect();
        show(&plan(&key, items, &stored, &HashMap::new(), generation, now()).expect("plannable"))
    }

    #[test]
    fn every_case_in_every_mode() {
        let live = |id, etag, summary| body(id, etag, "confirmed", summary, None);
        let gone = |id, etag| body(id, etag, "cancelled", "", None);
        let gone_of = |id, etag, m| body(id, etag, "cancelled", "", Some(m));
        let mut master_edit = live("M", "e2", "old");
        master_edit["recurrence"] = json!(["RRULE:FREQ=DAILY;COUNT=3"]);
        /// name, stored before, listed, incremental, full (generation 5)
        type Row = (
            &'static str,
            Vec<EventVersion>,
            Vec<Value>,
            &'static str,
            &'static str,
        );
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("new", vec![], vec![live("A", "e1", "s")],
             "created A | up A@0 | del -",
             "created A | up A@5 | del -"),
            ("known unchanged", vec![stored("A", "e1", "confirmed", "s")], vec![live("A", "e1", "s")],
             "- | up - | del -",
             "- | up A@5 | del -"),
            ("known changed", vec![stored("A", "e1", "confirmed", "old")], vec![live("A", "e2", "new")],
             "updated A[summary]+prev | up A@4 | del -",
             "updated A[summary]+prev | up A@5 | del -"),
            ("cancelled known", vec![stored("A", "e1", "confirmed", "s")], vec![gone("A", "e2")],
             "deleted A+prev | up - | del A",
             "deleted A+prev | up - | del A"),
            ("cancelled unknown", vec![], vec![gone("A", "e2")],
             "- | up - | del -",
             "- | up - | del -"),
            ("cancelled occurrence of a known series", vec![stored("M", "e1", "confirmed", "s")],
             vec![gone_of("M_1", "e2", "M")],
             "deleted M_1 | up M_1@0 | del -",
             "deleted M_1 | up M_1@5 | del -"),
            ("cancelled known occurrence of a known series",
             vec![stored("M", "e1", "confirmed", "s"), stored("M_1", "e1", "confirmed", "s")],
             vec![gone_of("M_1", "e2", "M")],
             "deleted M_1+prev | up M_1@4 | del -",
             "deleted M_1+prev | up M_1@5 | del -"),
            ("cancelled occurrence of an unknown series", vec![], vec![gone_of("M_1", "e2", "M")],
             "- | up - | del -",
             "- | up - | del -"),
            ("cancelled occurrence of a deleted series", vec![stored("M", "e1", "cancelled", "")],
             vec![gone_of("M_1", "e2", "M")],
             "- | up - | del -",
             "- | up - | del -"),
            ("hidden occurrence listed again", vec![stored("M_1", "e1", "cancelled", "")],
             vec![gone_of("M_1", "e1", "M")],
             "- | up - | del -",
             "- | up M_1@5 | del -"),
            ("recurring master edit", vec![stored("M", "e1", "confirmed", "old")], vec![master_edit],
             "updated M[recurrence]+prev | up M@4 | del -",
             "updated M[recurrence]+prev | up M@5 | del -"),
            ("reappearing after delete", vec![stored("A", "e1", "cancelled", "")], vec![live("A", "e3", "back")],
             "created A | up A@4 | del -",
             "created A | up A@5 | del -"),
            ("listed twice in one page", vec![], vec![live("A", "e1", "one"), live("A", "e2", "two")],
             "created A updated A[summary]+prev | up A@0 A@0 | del -",
             "created A updated A[summary]+prev | up A@5 A@5 | del -"),
        ];
        for (name, store, items, incremental, full) in table {
            assert_eq!(
                run(&store, &items, None),
                incremental,
                "{name}, incremental"
            );
            // A first full sync and one after 410 are the same to the
            // planner: a new generation over what the store holds.
            assert_eq!(run(&store, &items, Some(5)), full, "{name}, full");
            assert_eq!(run(&store, &items, Some(5)), full, "{name}, full after 410");
        }
    }

    #[test]
    fn an_item_without_a_string_id_is_unusable_not_skipped() {
        let key = CalendarKey::new("a", "c");
        let stored = HashMap::new();
        for (v, what) in [
            (json!({"etag": "e"}), "no id"),
            (json!({"id": 7, "etag": "e"}), "an id that is not a string"),
        ] {
            let items = vec![item(json!({"id": "ok", "etag": "e"})), item(v)];
            assert_eq!(
                plan(&key, items, &stored, &HashMap::new(), None, now()).map(|_| ()),
                Err(Unusable(what))
            );
        }
    }

    #[test]
    fn records_carry_the_listed_body_and_the_time_given() {
        let key = CalendarKey::new("acct", "cal");
        let before = stored("A", "e1", "confirmed", "old");
        let stored = HashMap::from([("A".to_string(), before.clone())]);
        let p = plan(
            &key,
            vec![item(body("A", "e2", "confirmed", "new", None))],
            &stored,
            &HashMap::new(),
            None,
            now(),
        )
        .expect("plan");
        let r = &p.changes[0];
        assert_eq!(
            (r.account.as_str(), r.calendar_id.as_str(), r.detected_at),
            ("acct", "cal", now())
        );
        let Body::New(event) = &r.event else {
            panic!("the listed body is new")
        };
        assert_eq!(event.to_value()["summary"], "new");
        assert_eq!(r.previous, Some(before.body));
        assert_eq!(r.etag.as_deref(), Some("e2"));
    }
}

//! The few Event fields the sync reads, taken from the raw body without
//! parsing the rest. Lenient like the rest of the client: a field of an
//! unexpected type reads as absent, and only an item that is not a JSON
//! object (or has no string `id`) is unusable.

use serde::Deserialize;
use serde_json::Value;

use crate::rawjson::RawJson;

/// `id`, `etag`, `status`, `sequence`, `updated` and `recurringEventId`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventHead {
    pub id: Option<String>,
    pub etag: Option<String>,
    pub status: Option<String>,
    pub sequence: Option<i64>,
    pub updated: Option<String>,
    pub recurring_event_id: Option<String>,
}

impl EventHead {
    /// Reads the head of one Event resource.
    pub(crate) fn of(body: &RawJson) -> EventHead {
        // Fast path: the fields have their documented types. Anything else
        // (a number where a string belongs, a repeated key) falls back to
        // reading the whole body as a `Value`.
        if let Ok(head) = body.parse::<EventHead>() {
            return head;
        }
        let v = body.to_value();
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        EventHead {
            id: text("id"),
            etag: text("etag"),
            status: text("status"),
            sequence: v.get("sequence").and_then(Value::as_i64),
            updated: text("updated"),
            recurring_event_id: text("recurringEventId"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head(v: Value) -> EventHead {
        EventHead::of(&RawJson::from(v))
    }

    #[test]
    fn reads_the_fields_and_ignores_the_rest() {
        let h = head(
            json!({"id": "a", "etag": "\"1\"", "status": "cancelled", "sequence": 3,
            "updated": "t", "recurringEventId": "m", "summary": "x", "attendees": [{"email": "e"}],
            "eventType": "somethingNew"}),
        );
        assert_eq!(h.id.as_deref(), Some("a"));
        assert_eq!(h.etag.as_deref(), Some("\"1\""));
        assert_eq!(h.status.as_deref(), Some("cancelled"));
        assert_eq!(h.sequence, Some(3));
        assert_eq!(h.updated.as_deref(), Some("t"));
        assert_eq!(h.recurring_event_id.as_deref(), Some("m"));
    }

    #[test]
    fn odd_types_read_as_absent_not_as_an_error() {
        let h = head(json!({"id": "a", "sequence": "7", "status": 1, "etag": null}));
        assert_eq!(h.id.as_deref(), Some("a"));
        assert_eq!((h.sequence, h.status, h.etag), (None, None, None));
        let repeated = RawJson::from_value(&json!(null));
        let text: RawJson = serde_json::from_str(r#"{"id":"a","id":"b"}"#).expect("raw");
        assert_eq!(
            EventHead::of(&text).id.as_deref(),
            Some("b"),
            "last one wins, as in Value"
        );
        assert_eq!(EventHead::of(&repeated), EventHead::default());
        assert_eq!(head(json!([1, 2])), EventHead::default());
    }
}

//! `changed_fields` of a change record: the top-level Event keys whose value
//! differs between the stored body and the new one, excluding `etag` and
//! `updated` (which change on every edit). Pure.

use serde_json::Value;

/// Keys that change on every write and say nothing about what changed.
const IGNORED: &[&str] = &["etag", "updated"];

/// Sorted top-level keys that differ (added, removed or changed).
pub(crate) fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(k.as_str()) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            new.keys()
                .filter(|k| !old.contains_key(k.as_str()))
                .cloned(),
        )
        .filter(|k| !IGNORED.contains(&k.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"id": "a", "etag": "\"1\"", "updated": "t1", "summary": "s", "sequence": 0,
               "start": {"dateTime": "2026-12-01T10:00:00Z"}, "attendees": [{"email": "a@x"}]})
    }

    #[test]
    fn summary_only_edit_reports_only_summary() {
        let mut new = base();
        new["summary"] = json!("s2");
        new["etag"] = json!("\"2\"");
        new["updated"] = json!("t2");
        assert_eq!(changed_fields(&base(), &new), ["summary"]);
    }

    #[test]
    fn nested_changes_report_the_top_level_key() {
        let mut new = base();
        new["start"]["dateTime"] = json!("2026-12-01T11:00:00Z");
        new["sequence"] = json!(1);
        new["attendees"][0]["responseStatus"] = json!("accepted");
        assert_eq!(
            changed_fields(&base(), &new),
            ["attendees", "sequence", "start"]
        );
    }

    #[test]
    fn added_and_removed_keys_count() {
        let mut new = base();
        new.as_object_mut().unwrap().remove("attendees");
        new["description"] = json!("d");
        assert_eq!(changed_fields(&base(), &new), ["attendees", "description"]);
    }

    #[test]
    fn etag_only_change_reports_nothing() {
        let mut new = base();
        new["etag"] = json!("\"9\"");
        assert!(changed_fields(&base(), &new).is_empty());
        assert!(changed_fields(&json!(null), &new).is_empty());
    }
}

//! The demo's checker: the records a step must produce, compared with the
//! records that arrived. Pure, so that it is tested on its own: a missing
//! delete or an extra update must fail and be named.

use serde_json::Value;

/// One record the script expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub change: &'static str,
    pub event_id: String,
    /// For `updated`: exactly these changed fields.
    pub fields: Option<Vec<&'static str>>,
}

impl Expect {
    pub fn created(id: &str) -> Self {
        Expect {
            change: "created",
            event_id: id.into(),
            fields: None,
        }
    }
    pub fn deleted(id: &str) -> Self {
        Expect {
            change: "deleted",
            event_id: id.into(),
            fields: None,
        }
    }
    pub fn updated(id: &str, fields: &[&'static str]) -> Self {
        Expect {
            change: "updated",
            event_id: id.into(),
            fields: Some(fields.to_vec()),
        }
    }

    fn matches(&self, rec: &Value) -> bool {
        rec["change"] == self.change
            && rec["event_id"] == self.event_id.as_str()
            && self
                .fields
                .as_ref()
                .is_none_or(|f| rec["changed_fields"] == serde_json::json!(f))
    }

    fn describe(&self) -> String {
        match &self.fields {
            Some(f) => format!("{} {} {:?}", self.change, self.event_id, f),
            None => format!("{} {}", self.change, self.event_id),
        }
    }
}

/// Every expected record present once, and nothing else. The error names
/// what is missing and what is extra.
pub fn check(expected: &[Expect], got: &[Value]) -> Result<(), Vec<String>> {
    let mut unmatched: Vec<&Value> = got.iter().collect();
    let mut problems = Vec::new();
    for e in expected {
        match unmatched.iter().position(|r| e.matches(r)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!("missing: {}", e.describe())),
        }
    }
    for r in unmatched {
        problems.push(format!("extra: {}", line(r)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// For events edited several times between syncs, Google returns only the
/// latest version, so the feed holds one or more records per event: the
/// last one must carry the final etag, no (event, etag) may repeat, and no
/// other event may appear. `finals` is (event id, final etag).
pub fn check_final(finals: &[(String, String)], got: &[Value]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in got {
        let id = r["event_id"].as_str().unwrap_or("");
        let expected = finals.iter().any(|(f, _)| f == id) && r["change"] == "updated";
        if !expected || !seen.insert((id.to_string(), r["etag"].to_string())) {
            problems.push(format!("extra: {}", line(r)));
        }
    }
    for (id, etag) in finals {
        let last = got.iter().rev().find(|r| r["event_id"] == id.as_str());
        if last.is_none_or(|r| r["etag"] != etag.as_str()) {
            problems.push(format!("missing: updated {id} at its final etag {etag}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Whether every expected record has arrived (extras aside).
pub fn complete(expected: &[Expect], got: &[Value]) -> bool {
    check(expected, got).map_or_else(|p| p.iter().all(|x| x.starts_with("extra")), |_| true)
}

/// One compact line per record: seq, change, event id, changed fields.
pub fn line(r: &Value) -> String {
    let fields = r["changed_fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!(
        "#{:<5} {:<8} {} {}",
        r["seq"],
        r["change"].as_str().unwrap_or(""),
        r["event_id"].as_str().unwrap_or(""),
        if fields.is_empty() {
            String::new()
        } else {
            format!("[{fields}]")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(seq: u64, change: &str, id: &str, fields: &[&str]) -> Value {
        json!({"seq": seq, "change": change, "event_id": id, "changed_fields": fields})
    }

    #[test]
    fn exact_stream_passes() {
        let want = [Expect::updated("a", &["summary"]), Expect::deleted("b")];
        assert!(check(
            &want,
            &[
                rec(1, "deleted", "b", &[]),
                rec(2, "updated", "a", &["summary"])
            ]
        )
        .is_ok());
    }

    #[test]
    fn a_missing_delete_is_named() {
        let want = [Expect::updated("a", &["summary"]), Expect::deleted("b")];
        let err = check(&want, &[rec(1, "updated", "a", &["summary"])]).unwrap_err();
        assert_eq!(err, ["missing: deleted b"]);
        assert!(!complete(&want, &[rec(1, "updated", "a", &["summary"])]));
    }

    #[test]
    fn an_extra_update_is_named() {
        let want = [Expect::updated("a", &["summary"])];
        let got = [
            rec(1, "updated", "a", &["summary"]),
            rec(2, "updated", "a", &["summary"]),
        ];
        let err = check(&want, &got).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].starts_with("extra: #2") && err[0].contains(" a [summary]"),
            "{err:?}"
        );
    }

    #[test]
    fn final_versions_check_names_stale_and_repeated_records() {
        let finals = vec![("a".to_string(), "\"3\"".to_string())];
        let at = |seq: u64, etag: &str| json!({"seq": seq, "change": "updated", "event_id": "a", "etag": etag, "changed_fields": ["summary"]});
        assert!(check_final(&finals, &[at(1, "\"2\""), at(2, "\"3\"")]).is_ok());
        let stale = check_final(&finals, &[at(1, "\"2\"")]).unwrap_err();
        assert!(
            stale[0].starts_with("missing: updated a at its final etag"),
            "{stale:?}"
        );
        let repeated = check_final(&finals, &[at(1, "\"3\""), at(2, "\"3\"")]).unwrap_err();
        assert!(repeated[0].starts_with("extra: #2"), "{repeated:?}");
    }

    #[test]
    fn wrong_fields_are_missing_plus_extra() {
        let want = [Expect::updated("a", &["summary"])];
        let err = check(&want, &[rec(1, "updated", "a", &["summary", "start"])]).unwrap_err();
        assert_eq!(err.len(), 2);
    }
}

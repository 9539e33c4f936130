//! The table `gcal-syncd status` prints from `/v1/calendars`.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One line per calendar, aligned, with a header.
pub fn table(body: &Value, now: DateTime<Utc>) -> String {
    let header = [
        "ACCOUNT",
        "CALENDAR",
        "STATE",
        "LAST SYNC",
        "EVENTS",
        "CHANNEL EXPIRES IN",
        "LAST ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for c in body["calendars"].as_array().into_iter().flatten() {
        let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
        let mut state = text("state");
        if c["poll_only"] == Value::Bool(true) {
            state.push_str(" (poll-only)");
        }
        if let Some(p) = c["progress"].as_object() {
            state.push_str(&format!(
                " {} events",
                p.get("events").and_then(Value::as_u64).unwrap_or(0)
            ));
        }
        let expires = c["channel"]["expires_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(|| "-".to_string(), |t| ago(t.with_timezone(&Utc) - now));
        let last_sync = c["last_sync_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(
                || "never".to_string(),
                |t| format!("{} ago", ago(now - t.with_timezone(&Utc))),
            );
        rows.push(vec![
            text("account"),
            text("calendar_id"),
            state,
            last_sync,
            c["events"].as_u64().unwrap_or(0).to_string(),
            expires,
            c["last_error"]
                .as_str()
                .unwrap_or("-")
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let store = &body["store"];
    if let Some(e) = store["error"].as_str() {
        out.push_str(&format!(
            "\nSTORE FAILING (the feed is paused at seq {}): {e}\n",
            store["feed_head"].as_u64().unwrap_or(0)
        ));
    }
    if let Some(aside) = store["recovered_from"].as_str() {
        out.push_str(&format!(
            "\nstore recovered: the damaged store was moved to {aside}\n"
        ));
    }
    out
}

/// "3m", "2h", "5d" style.
fn ago(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_aligned_rows() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = json!({"calendars": [
            {"account": "clinic", "calendar_id": "primary", "state": "idle", "last_sync_at": "2026-11-27T11:57:00Z",
             "events": 42, "channel": {"expires_at": "2026-12-03T12:00:00Z"}, "last_error": null, "poll_only": false},
            {"account": "clinic", "calendar_id": "holidays", "state": "backoff", "last_sync_at": null,
             "events": 0, "channel": null, "last_error": "rate limited", "poll_only": true}
        ]});
        let t = table(&body, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ACCOUNT  CALENDAR"));
        assert!(
            lines[1].contains("idle")
                && lines[1].contains("3m ago")
                && lines[1].contains("42")
                && lines[1].contains("6d")
        );
        assert!(
            lines[2].contains("backoff (poll-only)")
                && lines[2].contains("never")
                && lines[2].contains("rate limited")
        );
        assert!(!t.contains("STORE"), "a healthy store adds no line:\n{t}");
    }

    #[test]
    fn a_failing_or_recovered_store_is_said_below_the_table() {
        let body = json!({"calendars": [], "store": {"feed_head": 540,
            "error": "store backend error: No space left on device", "recovered_from": "/var/lib/s.corrupt-x"}});
        let t = table(&body, Utc::now());
        assert!(t.contains("STORE FAILING (the feed is paused at seq 540): store backend error: No space left on device"), "{t}");
        assert!(t.contains("moved to /var/lib/s.corrupt-x"), "{t}");
    }
}

//! `/v1/calendars`: the answer's types, which the API serialises and
//! `gcal-syncd status` deserialises (one type, both sides), and the table
//! `status` prints from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sync::{EngineState, Progress};
use crate::time::Timestamp;

/// The whole answer of `/v1/calendars`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CalendarsAnswer {
    pub calendars: Vec<CalendarStatus>,
    pub store: StoreStatus,
}

/// One running calendar.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CalendarStatus {
    pub account: String,
    pub calendar_id: String,
    pub state: EngineState,
    pub last_sync_at: Option<Timestamp>,
    pub has_sync_token: bool,
    pub events: u64,
    /// Its newest active channel.
    pub channel: Option<ChannelStatus>,
    pub poll_only: bool,
    /// Of a full sync that is running.
    pub progress: Option<Progress>,
    /// Passes completed since start.
    pub passes: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelStatus {
    pub id: String,
    pub expires_at: Option<Timestamp>,
    pub confirmed: bool,
}

/// The store's condition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreStatus {
    pub path: String,
    pub id: String,
    pub feed_head: crate::store::Seq,
    /// Why writes (or reads) fail, while they do.
    pub error: Option<String>,
    /// Where a damaged store was moved at start.
    pub recovered_from: Option<String>,
}

/// One line on top: how many calendars are synced and watched, which is
/// what a start-up of many calendars is waiting for.
pub fn summary(calendars: &[CalendarStatus]) -> String {
    let count = |f: &dyn Fn(&CalendarStatus) -> bool| calendars.iter().filter(|c| f(c)).count();
    let mut line = format!(
        "{} calendars: {} synced, {} watched ({} confirmed)",
        calendars.len(),
        count(&|c| c.has_sync_token),
        count(&|c| c.channel.is_some()),
        count(&|c| c.channel.as_ref().is_some_and(|ch| ch.confirmed)),
    );
    let poll_only = count(&|c| c.poll_only);
    if poll_only > 0 {
        line.push_str(&format!(", {poll_only} poll-only"));
    }
    let failing = count(&|c| c.last_error.is_some());
    if failing > 0 {
        line.push_str(&format!(", {failing} with errors"));
    }
    line
}

/// A summary line, then one line per calendar, aligned, with a header;
/// then the store's trouble, if any.
pub fn table(answer: &CalendarsAnswer, now: DateTime<Utc>) -> String {
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
    for c in &answer.calendars {
        let mut state = serde_json::to_value(c.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        if c.poll_only {
            state.push_str(" (poll-only)");
        }
        if let Some(p) = &c.progress {
            state.push_str(&format!(" {} events", p.events));
        }
        let expires = c
            .channel
            .as_ref()
            .and_then(|ch| ch.expires_at)
            .map_or_else(|| "-".to_string(), |t| ago(t.as_datetime() - now));
        let last_sync = c.last_sync_at.map_or_else(
            || "never".to_string(),
            |t| format!("{} ago", ago(now - t.as_datetime())),
        );
        rows.push(vec![
            c.account.clone(),
            c.calendar_id.clone(),
            state,
            last_sync,
            c.events.to_string(),
            expires,
            c.last_error
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    let mut out = format!("{}\n\n", summary(&answer.calendars));
    out.push_str(&aligned(rows));
    let store = &answer.store;
    if let Some(e) = &store.error {
        out.push_str(&format!(
            "\nSTORE FAILING (the feed is paused at seq {}): {e}\n",
            store.feed_head
        ));
    }
    if let Some(aside) = &store.recovered_from {
        out.push_str(&format!(
            "\nstore recovered: the damaged store was moved to {aside}\n"
        ));
    }
    out
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn aligned(rows: Vec<Vec<String>>) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
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
    out
}

/// One line per sink of a `/v1/sinks` answer, aligned, with a header;
/// empty when there are none.
pub fn sinks_table(answer: &serde_json::Value) -> String {
    let Some(sinks) = answer["sinks"].as_array().filter(|s| !s.is_empty()) else {
        return String::new();
    };
    let header = ["SINK", "TYPE", "STATE", "CURSOR", "LAG", "LAST ERROR"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    for s in sinks {
        let lag_seconds = s["lag_seconds"].as_i64().unwrap_or(0);
        rows.push(vec![
            text(&s["name"]),
            text(&s["type"]),
            text(&s["state"]),
            text(&s["cursor"]),
            format!(
                "{} records, {}",
                s["lag_records"].as_u64().unwrap_or(0),
                ago(chrono::Duration::seconds(lag_seconds))
            ),
            text(&s["last_error"]).chars().take(60).collect(),
        ]);
    }
    aligned(rows)
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
        let t = table(&serde_json::from_value(body).expect("answer"), now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "2 calendars: 0 synced, 1 watched (0 confirmed), 1 poll-only, 1 with errors"
        );
        assert!(lines[2].starts_with("ACCOUNT  CALENDAR"));
        assert!(
            lines[3].contains("idle")
                && lines[3].contains("3m ago")
                && lines[3].contains("42")
                && lines[3].contains("6d")
        );
        assert!(
            lines[4].contains("backoff (poll-only)")
                && lines[4].contains("never")
                && lines[4].contains("rate limited")
        );
        assert!(!t.contains("STORE"), "a healthy store adds no line:\n{t}");
    }

    #[test]
    fn a_failing_or_recovered_store_is_said_below_the_table() {
        let body = json!({"calendars": [], "store": {"feed_head": 540,
            "error": "store backend error: No space left on device", "recovered_from": "/var/lib/s.corrupt-x"}});
        let t = table(&serde_json::from_value(body).expect("answer"), Utc::now());
        assert!(t.contains("STORE FAILING (the feed is paused at seq 540): store backend error: No space left on device"), "{t}");
        assert!(t.contains("moved to /var/lib/s.corrupt-x"), "{t}");
    }

    #[test]
    fn sinks_render_one_aligned_row_each_with_lag_and_error() {
        let answer = json!({"sinks": [
            {"name": "app", "type": "webhook", "state": "delivering", "cursor": 41,
             "lag_records": 0, "lag_seconds": 0, "last_error": null},
            {"name": "db", "type": "command", "state": "disabled", "cursor": 7,
             "lag_records": 34, "lag_seconds": 7200, "last_error": "the receiver answered 410 Gone"}
        ]});
        let table = sinks_table(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("SINK  TYPE"), "{table}");
        assert!(
            lines[2].contains("disabled") && lines[2].contains("34 records, 2h"),
            "{table}"
        );
        assert!(
            lines[2].ends_with("the receiver answered 410 Gone"),
            "{table}"
        );
        assert_eq!(lines[1].find("webhook"), lines[2].find("command"));
        assert_eq!(sinks_table(&json!({"sinks": []})), "");
    }
}

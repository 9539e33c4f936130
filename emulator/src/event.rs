//! Events as Google stores them: client input checked field by field,
//! server fields (etag, updated, sequence, iCalUID, ...) maintained the way
//! the Calendar API does, and recurring series with their instances and
//! exceptions.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::recur::{local_to_utc, Series, SeriesStart, When};

/// Fields a client may write. Read-only fields it sends are ignored, as
/// Google does; any other field is refused (stricter than Google, which
/// drops them silently, so that client typos surface).
const WRITABLE: &[&str] = &[
    "summary",
    "description",
    "location",
    "start",
    "end",
    "recurrence",
    "attendees",
    "reminders",
    "colorId",
    "transparency",
    "visibility",
    "status",
    "sequence",
    "extendedProperties",
    "eventType",
    "guestsCanModify",
    "guestsCanInviteOthers",
    "guestsCanSeeOtherGuests",
    "anyoneCanAddSelf",
    "conferenceData",
    "attachments",
    "source",
    "endTimeUnspecified",
    "originalStartTime",
    "id",
    "iCalUID",
    "locked",
    "privateCopy",
    "focusTimeProperties",
    "outOfOfficeProperties",
    "workingLocationProperties",
    "birthdayProperties",
    "gadget",
    "hangoutLink",
];
const READ_ONLY: &[&str] = &[
    "kind",
    "etag",
    "htmlLink",
    "created",
    "updated",
    "creator",
    "organizer",
    "recurringEventId",
];
const EVENT_TYPES: &[&str] = &[
    "default",
    "birthday",
    "focusTime",
    "fromGmail",
    "outOfOffice",
    "workingLocation",
];

/// The start or end of an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum EventTime {
    Date(NaiveDate),
    At(DateTime<FixedOffset>, Option<Tz>),
}

impl EventTime {
    pub(super) fn when(&self) -> When {
        match self {
            EventTime::Date(d) => When::Date(*d),
            EventTime::At(t, _) => When::At(t.with_timezone(&Utc)),
        }
    }
}

/// Parses `start`/`end` (`which` names it in errors).
pub(super) fn parse_time(v: Option<&Value>, which: &str) -> Result<EventTime, ApiError> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or_else(|| missing_time(which))?;
    let tz = match obj.get("timeZone").and_then(Value::as_str) {
        Some(name) => Some(name.parse::<Tz>().map_err(|_| {
            ApiError::new(
                400,
                "calendar",
                "invalid",
                format!("Invalid time zone definition for {which} time."),
            )
        })?),
        None => None,
    };
    match (
        obj.get("date").and_then(Value::as_str),
        obj.get("dateTime").and_then(Value::as_str),
    ) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{which}: only one of date and dateTime may be set"
        ))),
        (Some(d), None) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(EventTime::Date)
            .map_err(|_| ApiError::bad_request(format!("{which}.date is not a yyyy-mm-dd date"))),
        (None, Some(t)) => match DateTime::parse_from_rfc3339(t) {
            Ok(at) => Ok(EventTime::At(at, tz)),
            Err(_) => {
                let naive =
                    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").map_err(|_| {
                        ApiError::bad_request(format!("{which}.dateTime is not an RFC 3339 time"))
                    })?;
                let zone = tz.ok_or_else(|| missing_zone(which))?;
                Ok(EventTime::At(
                    local_to_utc(naive, zone).fixed_offset(),
                    Some(zone),
                ))
            }
        },
        (None, None) => Err(missing_time(which)),
    }
}

fn missing_time(which: &str) -> ApiError {
    ApiError::new(400, "global", "required", format!("Missing {which} time."))
        .at("parameter", which)
}

fn missing_zone(which: &str) -> ApiError {
    ApiError::new(
        400,
        "calendar",
        "missingTimeZone",
        format!("Missing time zone definition for {which} time."),
    )
}

/// RFC 3339 with milliseconds and `Z`, as Google writes `updated`.
pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Checks a full event body (insert, update, or a patch merged onto the
/// stored event). Returns the parsed series when it recurs.
pub(super) fn check(body: &Map<String, Value>) -> Result<Option<Series>, ApiError> {
    let start = parse_time(body.get("start"), "start")?;
    let end = parse_time(body.get("end"), "end")?;
    match (start, end) {
        (EventTime::Date(s), EventTime::Date(e)) if e <= s => return Err(time_range_empty()),
        (EventTime::At(s, _), EventTime::At(e, _)) if e < s => return Err(time_range_empty()),
        (EventTime::Date(_), EventTime::At(..)) | (EventTime::At(..), EventTime::Date(_)) => {
            return Err(ApiError::bad_request(
                "start and end must both be dates or both be dateTimes",
            ))
        }
        _ => {}
    }
    if let Some(status) = body.get("status") {
        if !matches!(
            status.as_str(),
            Some("confirmed" | "tentative" | "cancelled")
        ) {
            return Err(ApiError::invalid_param("status", "Invalid status value."));
        }
    }
    if let Some(kind) = body.get("eventType") {
        if !kind.as_str().is_some_and(|k| EVENT_TYPES.contains(&k)) {
            return Err(ApiError::invalid_param("eventType", "Invalid event type."));
        }
    }
    check_attendees(body.get("attendees"))?;
    check_reminders(body.get("reminders"))?;
    let Some(recurrence) = body.get("recurrence") else {
        return Ok(None);
    };
    let lines: Vec<String> = recurrence
        .as_array()
        .and_then(|a| a.iter().map(|l| l.as_str().map(String::from)).collect())
        .ok_or_else(|| {
            ApiError::invalid_param("recurrence", "recurrence must be a list of strings")
        })?;
    if lines.is_empty() {
        return Ok(None);
    }
    let series_start = match start {
        EventTime::Date(d) => SeriesStart::Date(d),
        EventTime::At(t, Some(tz)) => SeriesStart::Local(t.with_timezone(&tz).naive_local(), tz),
        EventTime::At(_, None) => return Err(missing_zone("start")),
    };
    Series::parse(&lines, series_start).map(Some).map_err(|e| {
        ApiError::new(
            400,
            "calendar",
            "invalidRecurrence",
            format!("Invalid recurrence rule: {e}"),
        )
    })
}

fn time_range_empty() -> ApiError {
    ApiError::new(
        400,
        "calendar",
        "timeRangeEmpty",
        "The specified time range is empty.",
    )
    .at("parameter", "end")
}

fn check_attendees(v: Option<&Value>) -> Result<(), ApiError> {
    let Some(v) = v else { return Ok(()) };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::invalid_param("attendees", "attendees must be a list"))?;
    for a in list {
        let email = a.get("email").and_then(Value::as_str).unwrap_or("");
        if !email.contains('@') {
            return Err(
                ApiError::new(400, "global", "required", "Missing attendee email.")
                    .at("parameter", "attendees.email"),
            );
        }
        if let Some(rs) = a.get("responseStatus") {
            if !matches!(
                rs.as_str(),
                Some("needsAction" | "declined" | "tentative" | "accepted")
            ) {
                return Err(ApiError::invalid_param(
                    "attendees.responseStatus",
                    "Invalid attendee response status.",
                ));
            }
        }
    }
    Ok(())
}

fn check_reminders(v: Option<&Value>) -> Result<(), ApiError> {
    let Some(overrides) = v.and_then(|r| r.get("overrides")) else {
        return Ok(());
    };
    for o in overrides.as_array().into_iter().flatten() {
        let method_ok = matches!(
            o.get("method").and_then(Value::as_str),
            Some("email" | "popup")
        );
        let minutes_ok = o
            .get("minutes")
            .and_then(Value::as_i64)
            .is_some_and(|m| (0..=40320).contains(&m));
        if !method_ok || !minutes_ok {
            return Err(ApiError::invalid_param(
                "reminders.overrides",
                "Invalid reminder override.",
            ));
        }
    }
    Ok(())
}

/// The client's body, with read-only fields dropped and unknown ones refused.
pub(super) fn client_fields(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object."))?;
    let mut out = Map::new();
    for (k, v) in obj {
        if READ_ONLY.contains(&k.as_str()) {
            continue;
        }
        if !WRITABLE.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("Unknown field name: {k}"))
                .at("parameter", k.clone()));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// Client-supplied ids: base32hex (`a-v`, `0-9`), 5 to 1024 characters.
pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = (5..=1024).contains(&id.len())
        && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param("id", "Invalid resource id value."))
    }
}

/// Top-level keys whose value differs (both directions).
pub(super) fn changed_keys(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(new.keys().filter(|k| !old.contains_key(*k)).cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The minimal tombstone Google lists for a deleted event.
pub(super) fn tombstone(body: &Map<String, Value>) -> Value {
    let mut out = json!({
        "kind": "calendar#event",
        "etag": body.get("etag").cloned().unwrap_or(Value::Null),
        "id": body.get("id").cloned().unwrap_or(Value::Null),
        "status": "cancelled",
    });
    for k in ["recurringEventId", "originalStartTime"] {
        if let Some(v) = body.get(k) {
            out[k] = v.clone();
        }
    }
    out
}

/// Splits an instance id `<master>_<suffix>` and parses the suffix.
pub(super) fn split_instance_id(id: &str) -> Option<(&str, When)> {
    let (master, suffix) = id.rsplit_once('_')?;
    if let Some(t) = suffix.strip_suffix('Z') {
        let naive = NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%S").ok()?;
        return Some((master, When::At(naive.and_utc())));
    }
    NaiveDate::parse_from_str(suffix, "%Y%m%d")
        .ok()
        .map(|d| (master, When::Date(d)))
}

/// The body of one instance of a series, as `singleEvents=true` lists it.
pub(super) fn instance_of(master: &Map<String, Value>, at: When) -> Map<String, Value> {
    let mut inst = master.clone();
    inst.remove("recurrence");
    let master_id = master.get("id").and_then(Value::as_str).unwrap_or("");
    inst.insert(
        "id".into(),
        json!(format!("{master_id}_{}", at.id_suffix())),
    );
    inst.insert("recurringEventId".into(), json!(master_id));
    let start = parse_time(master.get("start"), "start").ok();
    let end = parse_time(master.get("end"), "end").ok();
    let zone = master.get("start").and_then(|s| s.get("timeZone")).cloned();
    match (at, start, end) {
        (When::Date(d), Some(EventTime::Date(s)), Some(EventTime::Date(e))) => {
            inst.insert("start".into(), json!({ "date": d.to_string() }));
            inst.insert("end".into(), json!({ "date": (d + (e - s)).to_string() }));
            inst.insert("originalStartTime".into(), json!({ "date": d.to_string() }));
        }
        (When::At(t), Some(EventTime::At(s, tz)), Some(EventTime::At(e, _))) => {
            let local = |u: DateTime<Utc>| match tz {
                Some(tz) => u
                    .with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::Secs, false),
                None => u.to_rfc3339_opts(SecondsFormat::Secs, true),
            };
            let mut start_obj = json!({ "dateTime": local(t) });
            let mut end_obj = json!({ "dateTime": local(t + (e - s)) });
            if let Some(z) = zone {
                start_obj["timeZone"] = z.clone();
                end_obj["timeZone"] = z;
            }
            inst.insert("originalStartTime".into(), start_obj.clone());
            inst.insert("start".into(), start_obj);
            inst.insert("end".into(), end_obj);
        }
        _ => {}
    }
    inst
}

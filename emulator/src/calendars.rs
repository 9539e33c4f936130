//! calendars.insert and calendarList.list (with sync tokens and
//! `deleted: true` entries), as Google shapes them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::server::{Call, Outcome};
use super::world::World;

#[derive(Serialize, Deserialize)]
struct ListToken {
    principal: String,
    rev: u64,
}

#[derive(Serialize, Deserialize)]
struct ListPage {
    q: String,
    snap: u64,
    after: Option<String>,
}

/// calendars.insert: `{summary, timeZone?}`.
pub(super) fn insert(w: &mut World, principal: &str, call: &Call) -> Result<Outcome, ApiError> {
    let body = call.json()?;
    let summary = body
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::required("summary"))?;
    let tz = body
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    let id = w.create_calendar(principal, None, summary, tz)?;
    let cal = w
        .calendars
        .get(&id)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    Ok(Outcome::ok(w.calendar_resource(&cal)))
}

/// calendarList.list.
pub(super) fn calendar_list(
    w: &mut World,
    principal: &str,
    call: &Call,
) -> Result<Outcome, ApiError> {
    let mut max = 100usize;
    let (mut sync, mut page, mut show_deleted, mut min_role) = (None, None, false, None);
    let mut canon = Vec::new();
    for (k, v) in &call.query {
        if k != "pageToken" {
            canon.push(format!("{k}={v}"));
        }
        match k.as_str() {
            "maxResults" => {
                max = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ApiError::invalid_param(k, "Invalid maxResults"))?
                    .min(250)
            }
            "syncToken" => sync = Some(v.clone()),
            "pageToken" => page = Some(v.clone()),
            "showDeleted" => show_deleted = v == "true",
            "showHidden" => {
                if v == "false" && call.param("syncToken").is_some() {
                    return Err(ApiError::invalid_param(
                        "showHidden",
                        "showHidden may not be false with syncToken",
                    ));
                }
            }
            "minAccessRole" => min_role = Some(v.clone()),
            _ if ["alt", "fields", "prettyPrint", "quotaUser", "key"].contains(&k.as_str()) => {}
            _ => {
                return Err(ApiError::invalid_param(
                    k,
                    format!("Unknown parameter: {k}"),
                ))
            }
        }
    }
    canon.sort();
    let q = canon.join("&");
    if sync.is_some() && (min_role.is_some() || call.param("showDeleted") == Some("false")) {
        let p = if min_role.is_some() {
            "minAccessRole"
        } else {
            "showDeleted"
        };
        return Err(ApiError::invalid_param(
            p,
            format!("The parameter {p} cannot be used together with syncToken."),
        ));
    }
    let since = match &sync {
        Some(t) => {
            let tok: ListToken = w
                .sealer
                .open(t)
                .filter(|t: &ListToken| t.principal == principal)
                .ok_or_else(|| ApiError::invalid_param("syncToken", "Invalid sync token value."))?;
            Some(tok.rev)
        }
        None => None,
    };
    let list = w.lists.get(principal).cloned().unwrap_or_default();
    let (snap, after) = match &page {
        Some(p) => {
            let p: ListPage = w
                .sealer
                .open(p)
                .filter(|p: &ListPage| p.q == q)
                .ok_or_else(|| ApiError::invalid_param("pageToken", "Invalid page token."))?;
            (p.snap, p.after)
        }
        None => (list.rev, None),
    };
    let rank = |r: &str| {
        ["freeBusyReader", "reader", "writer", "owner"]
            .iter()
            .position(|x| *x == r)
            .unwrap_or(0)
    };
    let mut items = Vec::new();
    let mut more = false;
    for (id, e) in list
        .entries
        .iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
    {
        let wanted = match since {
            Some(rev) => e.rev > rev,
            None => {
                (!e.deleted || show_deleted)
                    && min_role.as_deref().is_none_or(|m| rank(&e.role) >= rank(m))
            }
        };
        if !wanted {
            continue;
        }
        if items.len() == max {
            more = true;
            break;
        }
        items.push((id.clone(), entry(w, id, e)));
    }
    let mut out = json!({ "kind": "calendar#calendarList", "etag": format!("\"l{}\"", list.rev) });
    if more {
        let last = items.last().map(|(id, _)| id.clone());
        out["nextPageToken"] = json!(w.sealer.seal(&ListPage {
            q,
            snap,
            after: last
        }));
    } else if min_role.is_none() {
        out["nextSyncToken"] = json!(w.sealer.seal(&ListToken {
            principal: principal.to_string(),
            rev: snap
        }));
    }
    out["items"] = Value::Array(items.into_iter().map(|(_, v)| v).collect());
    Ok(Outcome::ok(out))
}

fn entry(w: &World, id: &str, e: &super::world::ListEntry) -> Value {
    let mut v = json!({ "kind": "calendar#calendarListEntry", "etag": format!("\"e{}\"", e.rev), "id": id });
    if e.deleted {
        v["deleted"] = json!(true);
        return v;
    }
    if let Some(c) = w.calendars.get(id) {
        v["summary"] = json!(c.summary);
        v["timeZone"] = json!(c.time_zone);
    }
    v["accessRole"] = json!(e.role);
    v["defaultReminders"] = json!([]);
    if e.primary {
        v["primary"] = json!(true);
    }
    v
}

//! Conformance of the emulator's API with the "Emulator checklist" of
//! shared/docs/gcal-api-behavior.md, over real HTTP. Tests are named after
//! the checklist points they prove (cpNN).

use std::collections::HashSet;

use gcal_emulator::dates;
use gcal_emulator::{Edit, Options};
use reqwest::Method;
use serde_json::{json, Value};

use crate::emu::{self, event, reason, Api};

const EVENTS: &str = "/calendars/primary/events";

async fn seeded(n: u32) -> (gcal_emulator::Emulator, Api, Vec<String>) {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, body) = api.post(EVENTS, event(&format!("e{i}"), 1 + i % 28)).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().expect("id").to_string());
    }
    (emu, api, ids)
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cp01_max_results_defaults_to_250_clamps_to_2500_and_short_pages_keep_paging() {
    let emu = emu::start_default().await;
    emu.bulk_insert(
        gcal_emulator::SERVICE_ACCOUNT,
        (0..2600).map(|i| event(&format!("b{i}"), 1 + i % 28)),
    )
    .expect("bulk");
    let api = Api::new(&emu).await;
    let (_, first) = api.get(EVENTS, &[]).await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(250));
    assert!(first["nextPageToken"].is_string() && first.get("nextSyncToken").is_none());
    let (_, big) = api.get(EVENTS, &[("maxResults", "100000")]).await;
    assert_eq!(big["items"].as_array().map(Vec::len), Some(2500));
    let (status, body) = api.get(EVENTS, &[("maxResults", "0")]).await;
    assert_eq!((status, reason(&body)), (400, "invalid"));

    emu.set_short_page_rate(0.5);
    let mut seen = Vec::new();
    let (mut page, mut short_with_token) = (None::<String>, 0);
    loop {
        let mut q = vec![("maxResults", "300")];
        if let Some(p) = &page {
            q.push(("pageToken", p));
        }
        let (status, body) = api.get(EVENTS, &q).await;
        assert_eq!(status, 200, "{body}");
        let n = body["items"].as_array().map_or(0, Vec::len);
        seen.extend(ids_of(body["items"].as_array().expect("items")));
        match body["nextPageToken"].as_str() {
            Some(p) => {
                short_with_token += usize::from(n < 300);
                page = Some(p.to_string());
            }
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(
        (seen.len(), unique.len()),
        (2600, 2600),
        "every event exactly once across short pages"
    );
    assert!(
        short_with_token > 0,
        "no short or empty page carried nextPageToken"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cp02_next_sync_token_only_on_the_last_page_and_never_after_forbidden_filters() {
    let (_emu, api, _) = seeded(5).await;
    let (items, token) = api.list_all(EVENTS, &[("maxResults", "2")]).await;
    assert_eq!(items.len(), 5);
    assert!(token.is_some());
    let yesterday = dates::utc(-1, 0, 0);
    for filter in [
        ("orderBy", "updated"),
        ("q", "e1"),
        ("iCalUID", "x@google.com"),
        ("privateExtendedProperty", "a=b"),
        ("updatedMin", yesterday.as_str()),
    ] {
        let (status, body) = api.get(EVENTS, &[filter]).await;
        assert_eq!(status, 200, "{filter:?}: {body}");
        let (_, token) = api.list_all(EVENTS, &[filter]).await;
        assert!(token.is_none(), "nextSyncToken after {filter:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cp03_forbidden_combinations_are_400() {
    let (_emu, api, _) = seeded(1).await;
    let (_, token) = api.list_all(EVENTS, &[]).await;
    let token = token.expect("sync token");
    let (last_month, next_year, yesterday) = (
        dates::utc(-30, 0, 0),
        dates::utc(365, 0, 0),
        dates::utc(-1, 0, 0),
    );
    for (k, v) in [
        ("orderBy", "updated"),
        ("q", "x"),
        ("iCalUID", "x"),
        ("timeMin", last_month.as_str()),
        ("timeMax", next_year.as_str()),
        ("updatedMin", yesterday.as_str()),
        ("privateExtendedProperty", "a=b"),
        ("sharedExtendedProperty", "a=b"),
        ("showDeleted", "false"),
    ] {
        let (status, body) = api.get(EVENTS, &[("syncToken", &token), (k, v)]).await;
        assert_eq!(status, 400, "{k}: {body}");
        assert_eq!(body["error"]["errors"][0]["location"], json!(k), "{body}");
    }
    let (status, _) = api.get(EVENTS, &[("orderBy", "startTime")]).await;
    assert_eq!(status, 400, "orderBy=startTime needs singleEvents");
    let (status, body) = api
        .get(
            EVENTS,
            &[
                ("timeMin", &dates::utc(31, 0, 0)),
                ("timeMax", &dates::utc(0, 0, 0)),
            ],
        )
        .await;
    assert_eq!((status, reason(&body)), (400, "timeRangeEmpty"));
    let (status, _) = api
        .get(EVENTS, &[("timeMin", &dates::at(dates::date(31), 0, 0))])
        .await;
    assert_eq!(status, 400, "timeMin without an offset");
}

#[tokio::test(flavor = "multi_thread")]
async fn cp04_page_tokens_are_bound_to_their_query_and_changes_while_paging_are_not_lost() {
    let (emu, api, ids) = seeded(6).await;
    let (_, first) = api.get(EVENTS, &[("maxResults", "2")]).await;
    let page = first["nextPageToken"]
        .as_str()
        .expect("page token")
        .to_string();
    let (status, body) = api
        .get(EVENTS, &[("maxResults", "3"), ("pageToken", &page)])
        .await;
    assert_eq!(
        (status, body["error"]["errors"][0]["location"].as_str()),
        (400, Some("pageToken"))
    );
    let (status, _) = api
        .get(EVENTS, &[("maxResults", "2"), ("pageToken", "bm9wZQ")])
        .await;
    assert_eq!(status, 400, "forged page token");

    // Change everything while the client pages.
    let cal = gcal_emulator::SERVICE_ACCOUNT;
    let mut listed = ids_of(first["items"].as_array().expect("items"));
    let added = emu
        .edit(cal, Edit::Insert(event("added while paging", 9)), false)
        .await
        .expect("insert");
    for id in &ids {
        emu.edit(
            cal,
            Edit::Patch(id.clone(), json!({"summary": "edited while paging"})),
            false,
        )
        .await
        .expect("patch");
    }
    let mut page = Some(page);
    let mut sync = None;
    while let Some(p) = page.take() {
        let (_, body) = api
            .get(EVENTS, &[("maxResults", "2"), ("pageToken", &p)])
            .await;
        listed.extend(ids_of(body["items"].as_array().expect("items")));
        page = body["nextPageToken"].as_str().map(String::from);
        sync = body["nextSyncToken"].as_str().map(String::from).or(sync);
    }
    let (items, _) = api
        .list_all(EVENTS, &[("syncToken", &sync.expect("sync token"))])
        .await;
    let incremental: HashSet<String> = ids_of(&items).into_iter().collect();
    for id in &ids {
        assert!(
            incremental.contains(id),
            "edit of {id} made while paging was lost"
        );
    }
    assert!(
        incremental.contains(added["id"].as_str().expect("id")),
        "insert made while paging was lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cp05_incremental_gives_each_change_once_shuffled_with_minimal_tombstones() {
    let (emu, api, ids) = seeded(40).await;
    let (full, token) = api.list_all(EVENTS, &[]).await;
    let order = ids_of(&full);
    let mut sorted = order.clone();
    sorted.sort();
    assert_ne!(order, sorted, "listing order is not shuffled");
    let (again, _) = api.list_all(EVENTS, &[]).await;
    assert_eq!(order, ids_of(&again), "order is not stable");

    let cal = gcal_emulator::SERVICE_ACCOUNT;
    emu.edit(
        cal,
        Edit::Patch(ids[0].clone(), json!({"summary": "one"})),
        false,
    )
    .await
    .expect("patch");
    emu.edit(
        cal,
        Edit::Patch(ids[0].clone(), json!({"summary": "two"})),
        false,
    )
    .await
    .expect("patch");
    emu.edit(cal, Edit::Delete(ids[1].clone()), false)
        .await
        .expect("delete");
    let (items, _) = api
        .list_all(EVENTS, &[("syncToken", &token.expect("token"))])
        .await;
    assert_eq!(items.len(), 2, "{items:?}");
    let tomb = items
        .iter()
        .find(|i| i["id"] == json!(ids[1]))
        .expect("tombstone");
    let mut keys: Vec<&str> = tomb
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["etag", "id", "kind", "status"],
        "tombstone is not minimal: {tomb}"
    );
    assert_eq!(tomb["status"], "cancelled");
}

/// The id of the instance `days` into the daily 09:00 Berlin (08:00 UTC)
/// series of [`series_setup`].
fn standup(master: &str, days: i64) -> String {
    format!(
        "{master}{}",
        dates::instance_suffix(dates::winter_monday(), days, 8)
    )
}

async fn series_setup() -> (gcal_emulator::Emulator, Api, String, String) {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let monday = dates::winter_monday();
    let (_, master) = api
        .post(
            EVENTS,
            json!({
                "summary": "standup",
                "start": {"dateTime": dates::at(monday, 9, 0) + "+01:00", "timeZone": "Europe/Berlin"},
                "end": {"dateTime": dates::at(monday, 9, 15) + "+01:00", "timeZone": "Europe/Berlin"},
                "recurrence": ["RRULE:FREQ=DAILY;COUNT=5"],
            }),
        )
        .await;
    let master_id = master["id"].as_str().expect("id").to_string();
    let (_, single) = api.post(EVENTS, event("single", 3)).await;
    let single_id = single["id"].as_str().expect("id").to_string();
    // Cancel the third instance and delete the single event.
    let inst = standup(&master_id, 2);
    let (status, body) = api
        .call(Method::DELETE, &format!("{EVENTS}/{inst}"), &[], None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = api
        .call(Method::DELETE, &format!("{EVENTS}/{single_id}"), &[], None)
        .await;
    assert_eq!(status, 204);
    (emu, api, master_id, single_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn cp06_show_deleted_by_single_events_matrix_and_get_returns_cancelled() {
    let (_emu, api, master, single) = series_setup().await;
    let inst = standup(&master, 2);
    let list = |sd: &'static str, se: &'static str| {
        let api = &api;
        async move {
            let (items, _) = api
                .list_all(EVENTS, &[("showDeleted", sd), ("singleEvents", se)])
                .await;
            let mut v: Vec<(String, String)> = items
                .iter()
                .map(|i| {
                    (
                        i["id"].as_str().unwrap_or("").to_string(),
                        i["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            v.sort();
            v
        }
    };
    let c = |id: &str, s: &str| (id.to_string(), s.to_string());
    // Both false: master, plus the cancelled instance (Google lists those anyway).
    assert_eq!(
        list("false", "false").await,
        [c(&master, "confirmed"), c(&inst, "cancelled")]
    );
    // showDeleted only: every tombstone.
    let mut want = vec![
        c(&master, "confirmed"),
        c(&inst, "cancelled"),
        c(&single, "cancelled"),
    ];
    want.sort();
    assert_eq!(list("true", "false").await, want);
    // singleEvents only: four live instances, no master, no cancelled ones.
    let live = list("false", "true").await;
    assert_eq!(live.len(), 4, "{live:?}");
    assert!(live
        .iter()
        .all(|(id, s)| id.starts_with(&format!("{master}_")) && s == "confirmed"));
    // Both: the cancelled instance and the deleted single event, never a master.
    let both = list("true", "true").await;
    assert!(
        both.contains(&c(&inst, "cancelled")) && both.contains(&c(&single, "cancelled")),
        "{both:?}"
    );
    assert!(!both.iter().any(|(id, _)| id == &master));

    let (status, got) = api.get(&format!("{EVENTS}/{single}"), &[]).await;
    assert_eq!((status, got["status"].as_str()), (200, Some("cancelled")));
}

#[tokio::test(flavor = "multi_thread")]
async fn cp07_410_for_invalidated_expired_and_purged_tokens_and_double_delete() {
    let cal = gcal_emulator::SERVICE_ACCOUNT;
    let (emu, api, ids) = seeded(3).await;
    let (_, token) = api.list_all(EVENTS, &[]).await;
    let token = token.expect("token");
    emu.invalidate_sync_tokens(cal).expect("invalidate");
    let (status, body) = api.get(EVENTS, &[("syncToken", &token)]).await;
    assert_eq!(status, 410);
    let want: Value = serde_json::from_str(r#"{"error":{"errors":[{"domain":"calendar","reason":"fullSyncRequired","message":"Sync token is no longer valid, a full sync is required.","locationType":"parameter","location":"syncToken"}],"code":410,"message":"Sync token is no longer valid, a full sync is required."}}"#).expect("json");
    assert_eq!(body, want);

    // Older than tombstone retention.
    let (_, token) = api.list_all(EVENTS, &[]).await;
    emu.edit(cal, Edit::Delete(ids[0].clone()), false)
        .await
        .expect("delete");
    emu.expire_tombstones(cal).expect("expire");
    let (status, _) = api
        .get(EVENTS, &[("syncToken", &token.expect("token"))])
        .await;
    assert_eq!(status, 410, "token older than purged tombstones");

    // Token TTL.
    let short = emu::start(Options {
        allow_http: true,
        sync_token_ttl: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await;
    let short_api = Api::new(&short).await;
    let (_, token) = short_api.list_all(EVENTS, &[]).await;
    let token = token.expect("token");
    let issued_by = chrono::Utc::now().timestamp_millis();
    emu::wait_until(
        "the clock to pass the token's issue time",
        std::time::Duration::from_secs(5),
        || (chrono::Utc::now().timestamp_millis() > issued_by).then_some(()),
    )
    .await;
    let (status, _) = short_api.get(EVENTS, &[("syncToken", &token)]).await;
    assert_eq!(status, 410, "expired token");

    let (status, body) = api
        .get(EVENTS, &[("updatedMin", &dates::utc(-60, 0, 0))])
        .await;
    assert_eq!((status, reason(&body)), (410, "updatedMinTooLongAgo"));
    let (status, body) = api
        .call(Method::DELETE, &format!("{EVENTS}/{}", ids[1]), &[], None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = api
        .call(Method::DELETE, &format!("{EVENTS}/{}", ids[1]), &[], None)
        .await;
    assert_eq!((status, reason(&body)), (410, "deleted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cp08_ids_duplicates_series_instances_and_times() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let mut bad = event("x", 1);
    bad["id"] = json!("UPPER-case");
    assert_eq!(api.post(EVENTS, bad).await.0, 400, "id outside base32hex");
    let mut good = event("x", 1);
    good["id"] = json!("abcdev0123");
    assert_eq!(api.post(EVENTS, good.clone()).await.0, 200);
    let (status, body) = api.post(EVENTS, good).await;
    assert_eq!((status, reason(&body)), (409, "duplicate"));

    let monday = dates::winter_monday();
    let (_, master) = api
        .post(
            EVENTS,
            json!({
                "summary": "weekly", "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3"],
                "start": {"dateTime": dates::at(monday, 10, 0), "timeZone": "America/New_York"},
                "end": {"dateTime": dates::at(monday, 10, 30), "timeZone": "America/New_York"},
            }),
        )
        .await;
    let id = master["id"].as_str().expect("id");
    let (instances, _) = api
        .list_all(
            EVENTS,
            &[
                ("singleEvents", "true"),
                ("orderBy", "startTime"),
                ("q", "weekly"),
            ],
        )
        .await;
    let got: Vec<&str> = instances
        .iter()
        .map(|i| i["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        got,
        [0, 7, 14].map(|d| format!("{id}{}", dates::instance_suffix(monday, d, 15)))
    );
    for inst in &instances {
        assert_eq!(inst["recurringEventId"], json!(id));
        assert_eq!(
            inst["iCalUID"], master["iCalUID"],
            "instances share the series' iCalUID"
        );
        assert!(
            inst["originalStartTime"]["dateTime"].is_string() && inst.get("recurrence").is_none()
        );
    }
    let (d7, d8) = (dates::date(7).to_string(), dates::date(8).to_string());
    let recurring_without_zone = json!({"recurrence": ["RRULE:FREQ=DAILY"], "start": {"dateTime": dates::utc(7, 10, 0)}, "end": {"dateTime": dates::utc(7, 11, 0)}});
    assert_eq!(
        api.post(EVENTS, recurring_without_zone).await.0,
        400,
        "a series needs start.timeZone"
    );
    let unsupported =
        json!({"recurrence": ["RRULE:FREQ=YEARLY"], "start": {"date": d7}, "end": {"date": d8}});
    let (status, body) = api.post(EVENTS, unsupported).await;
    assert!(
        status == 400 && body.to_string().contains("YEARLY"),
        "{body}"
    );
    let all_day_zero = json!({"start": {"date": d7}, "end": {"date": d7}});
    assert_eq!(
        api.post(EVENTS, all_day_zero).await.0,
        400,
        "end is exclusive: same-day end is empty"
    );
    let mixed = json!({"start": {"date": d7}, "end": {"dateTime": dates::utc(8, 0, 0)}});
    assert_eq!(
        api.post(EVENTS, mixed).await.0,
        400,
        "date and dateTime mixed"
    );
    let both = json!({"start": {"date": d7, "dateTime": dates::utc(7, 0, 0)}, "end": {"date": d8}});
    assert_eq!(
        api.post(EVENTS, both).await.0,
        400,
        "date and dateTime together"
    );
    let unknown = json!({"summry": "typo", "start": {"date": d7}, "end": {"date": d8}});
    assert_eq!(api.post(EVENTS, unknown).await.0, 400, "unknown field");
}

#[tokio::test(flavor = "multi_thread")]
async fn cp09_etag_updated_sequence_and_if_match() {
    let (_emu, api, ids) = seeded(1).await;
    let path = format!("{EVENTS}/{}", ids[0]);
    let (_, v0) = api.get(&path, &[]).await;
    let patch = |body: Value| api.call(Method::PATCH, &path, &[], Some(body));
    let (_, v1) = patch(json!({"description": "words"})).await;
    assert_ne!(v1["etag"], v0["etag"]);
    assert_eq!(
        v1["sequence"], v0["sequence"],
        "description edit bumped sequence"
    );
    let (_, v2) = patch(json!({"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5}]}})).await;
    assert_ne!(v2["etag"], v1["etag"], "reminder edit must change the etag");
    assert_eq!(
        v2["updated"], v1["updated"],
        "reminder-only edit changed updated"
    );
    let (_, v3) = patch(json!({"start": {"dateTime": dates::utc(1, 9, 0)}})).await;
    assert_eq!(
        v3["sequence"],
        json!(v0["sequence"].as_i64().unwrap_or(0) + 1),
        "time change did not bump sequence"
    );
    let (status, _) = patch(json!({"sequence": 0})).await;
    assert_eq!(status, 400, "lower sequence accepted");
    let (status, body) = api
        .call(
            Method::PUT,
            &path,
            &[],
            Some(json!({"summary": "no sequence", "start": v3["start"], "end": v3["end"]})),
        )
        .await;
    assert_eq!(
        status, 400,
        "update omitting sequence (counts as 0) accepted: {body}"
    );
    let stale = api
        .http
        .patch(format!("{}{path}", api.root))
        .bearer_auth(&api.token)
        .header("If-Match", v0["etag"].as_str().unwrap_or(""))
        .json(&json!({"summary": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(stale.status().as_u16(), 412);
    let fresh = api
        .http
        .patch(format!("{}{path}", api.root))
        .bearer_auth(&api.token)
        .header("If-Match", v3["etag"].as_str().unwrap_or(""))
        .json(&json!({"summary": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(fresh.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn cp10_trimming_a_series_cancels_exceptions_after_the_split() {
    let (_emu, api, master, _) = series_setup().await;
    let late = standup(&master, 3);
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("{EVENTS}/{late}"),
            &[],
            Some(json!({"summary": "moved"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, token) = api.list_all(EVENTS, &[]).await;
    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("{EVENTS}/{master}"),
            &[],
            Some(json!({"recurrence": [format!(
                "RRULE:FREQ=DAILY;UNTIL={}",
                (dates::winter_monday() + chrono::Duration::days(1)).format("%Y%m%dT235959Z")
            )]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (items, _) = api
        .list_all(EVENTS, &[("syncToken", &token.expect("token"))])
        .await;
    let late_item = items
        .iter()
        .find(|i| i["id"] == json!(late))
        .expect("exception after the split is reported");
    assert_eq!(late_item["status"], "cancelled");
    assert_eq!(late_item["recurringEventId"], json!(master));
}

#[tokio::test(flavor = "multi_thread")]
async fn cp19_calendar_list_sync_and_a_deleted_calendar_answers_404() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let (status, cal) = api
        .post(
            "/calendars",
            json!({"summary": "team", "timeZone": "Europe/Paris"}),
        )
        .await;
    assert_eq!(status, 200, "{cal}");
    let id = cal["id"].as_str().expect("id").to_string();
    let (items, token) = api.list_all("/users/me/calendarList", &[]).await;
    assert!(ids_of(&items).contains(&id));
    assert!(items.iter().any(|i| i["primary"] == json!(true)));
    let cal_path = format!("/calendars/{}", id.replace('@', "%40"));
    let (status, _) = api.call(Method::DELETE, &cal_path, &[], None).await;
    assert_eq!(status, 204);
    let (changes, _) = api
        .list_all(
            "/users/me/calendarList",
            &[("syncToken", &token.expect("token"))],
        )
        .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0]["id"].as_str(), changes[0]["deleted"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    let (status, body) = api.get(&format!("{cal_path}/events"), &[]).await;
    assert_eq!((status, reason(&body)), (404, "notFound"));
    let (status, _) = api
        .post(
            &format!("{cal_path}/events/watch"),
            json!({"id": "c1", "type": "web_hook", "address": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn cp20_injected_errors_have_googles_shapes_and_quotas_are_enforced() {
    use gcal_emulator::{FaultKind, FaultRule, QuotaKnobs};
    let (emu, api, _) = seeded(1).await;
    for (kind, status, why) in [
        (FaultKind::Unauthorized, 401, "authError"),
        (FaultKind::RateLimit403, 403, "rateLimitExceeded"),
        (FaultKind::UserRateLimit403, 403, "userRateLimitExceeded"),
        (FaultKind::RateLimit429, 429, "rateLimitExceeded"),
        (FaultKind::Backend500, 500, "backendError"),
        (FaultKind::Unavailable503, 503, "backendError"),
    ] {
        emu.set_faults(vec![FaultRule {
            kind,
            rate: 1.0,
            method: Some("events.list".into()),
            remaining: Some(1),
            slow_ms: 0,
        }]);
        let (got, body) = api.get(EVENTS, &[]).await;
        assert_eq!((got, reason(&body)), (status, why), "{kind:?}: {body}");
        assert_eq!(body["error"]["code"], json!(status));
        assert_eq!(
            api.get(EVENTS, &[]).await.0,
            200,
            "rule with remaining=1 must be spent"
        );
    }
    emu.set_faults(vec![FaultRule {
        kind: FaultKind::Drop,
        rate: 1.0,
        method: None,
        remaining: Some(1),
        slow_ms: 0,
    }]);
    let dropped = api
        .http
        .get(format!("{}{EVENTS}", api.root))
        .bearer_auth(&api.token)
        .send()
        .await;
    assert!(dropped.is_err(), "connection was not dropped");
    emu.set_faults(vec![]);

    // A fresh emulator, so that no call above counts against the minute.
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    emu.set_quota(QuotaKnobs {
        per_user_per_minute: 7,
        ..Default::default()
    });
    let missing = format!("{EVENTS}/nonexistent0");
    let patch = || api.call(Method::PATCH, &missing, &[], Some(json!({})));
    let (status, _) = patch().await;
    assert_eq!(status, 404, "patch costs 3 units, 3 of 7 used");
    let (status, _) = patch().await;
    assert_eq!(status, 404, "6 of 7 used");
    let (status, body) = patch().await;
    assert_eq!(
        (status, reason(&body)),
        (403, "userRateLimitExceeded"),
        "9 > 7 units"
    );
    assert_eq!(
        api.get(EVENTS, &[]).await.0,
        200,
        "a 1-unit call still fits (7 of 7)"
    );
    emu.set_quota(QuotaKnobs {
        per_project_per_minute: 0,
        ..Default::default()
    });
    let (status, body) = api.get(EVENTS, &[]).await;
    assert_eq!((status, reason(&body)), (429, "rateLimitExceeded"));
}

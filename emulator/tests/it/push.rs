//! Conformance of the emulator's channels, push delivery and token
//! endpoint with the "Emulator checklist" (cp11-cp18, cp21).

use std::time::Duration;

use gcal_emulator::{Edit, Options, PushKnobs, SERVICE_ACCOUNT};
use serde_json::{json, Value};

use crate::emu::{self, event, reason, Api, Claims, Receiver};

const WAIT: Duration = Duration::from_secs(20);

fn watch_body(id: &str, address: &str) -> Value {
    json!({"id": id, "type": "web_hook", "address": address, "token": "chan-token-1"})
}

#[tokio::test(flavor = "multi_thread")]
async fn cp11_watch_bodies_are_validated() {
    let strict = emu::start(Options::default()).await;
    let api = Api::new(&strict).await;
    let path = "/calendars/primary/events/watch";
    let (status, body) = api
        .post(path, watch_body("c1", "http://127.0.0.1:9/x"))
        .await;
    assert_eq!(
        (status, reason(&body)),
        (400, "webhookUrlNotHttps"),
        "http address without allow_http"
    );
    let https = "https://hooks.example.com/n";
    for (bad, why) in [
        (
            json!({"id": "has.dot", "type": "web_hook", "address": https}),
            "id charset",
        ),
        (
            json!({"id": "a".repeat(65), "type": "web_hook", "address": https}),
            "id length",
        ),
        (json!({"type": "web_hook", "address": https}), "id missing"),
        (
            json!({"id": "c2", "type": "email", "address": https}),
            "type",
        ),
        (
            json!({"id": "c3", "type": "web_hook", "address": https, "token": "t".repeat(257)}),
            "token length",
        ),
        (
            json!({"id": "c4", "type": "web_hook", "address": https, "expiration": "1000"}),
            "expiration in the past",
        ),
    ] {
        assert_eq!(api.post(path, bad).await.0, 400, "{why}");
    }
    let (status, ok) = api.post(path, json!({"id": "c5", "type": "webhook", "address": https, "params": {"ttl": "999999999"}})).await;
    assert_eq!(status, 200, "{ok}");
    let expiration: i64 = ok["expiration"]
        .as_str()
        .expect("ms string")
        .parse()
        .expect("number");
    let cap = chrono::Utc::now().timestamp_millis() + 7 * 86_400_000;
    assert!(expiration <= cap + 1000, "ttl not capped at 7 days");
    let (status, body) = api
        .post(
            path,
            json!({"id": "c5", "type": "web_hook", "address": https}),
        )
        .await;
    assert_eq!((status, reason(&body)), (400, "channelIdNotUnique"));
    strict.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp12_watch_answers_api_channel_with_one_resource_id_per_collection_and_push_less_calendars_refuse(
) {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let path = "/calendars/primary/events/watch";
    let (_, a) = api
        .post(path, watch_body("chan-a", "http://127.0.0.1:9/x"))
        .await;
    let (_, b) = api
        .post(
            path,
            json!({"id": "chan-b", "type": "web_hook", "address": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_eq!(a["kind"], "api#channel");
    assert_eq!(a["token"], "chan-token-1");
    assert!(
        b.get("token").is_none(),
        "token present though none was sent"
    );
    assert_eq!(
        a["resourceId"], b["resourceId"],
        "one resourceId per collection"
    );
    assert!(a["resourceUri"]
        .as_str()
        .is_some_and(|u| u.contains("/events")));
    assert!(a["expiration"].is_string());
    let (_, list) = api
        .post(
            "/users/me/calendarList/watch",
            json!({"id": "chan-l", "type": "web_hook", "address": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_ne!(list["resourceId"], a["resourceId"]);

    let holidays = emu
        .create_calendar(
            SERVICE_ACCOUNT,
            Some("en.usa#holiday@group.v.calendar.google.com"),
            "Holidays",
            "UTC",
        )
        .expect("create");
    emu.set_push_supported(&holidays, false).expect("knob");
    let (status, body) = api
        .post(
            &format!(
                "/calendars/{}/events/watch",
                holidays.replace('#', "%23").replace('@', "%40")
            ),
            watch_body("chan-h", "http://127.0.0.1:9/x"),
        )
        .await;
    assert_eq!(
        (status, reason(&body)),
        (400, "pushNotSupportedForRequestedResource")
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp13_cp14_notifications_have_googles_shape_sync_first_then_increasing_numbers() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let rx = Receiver::start(vec![200]).await;
    let (status, ch) = api
        .post(
            "/calendars/primary/events/watch",
            watch_body("chan-shape", &rx.url),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..5 {
        emu.edit(
            SERVICE_ACCOUNT,
            Edit::Insert(event(&format!("p{i}"), 2)),
            true,
        )
        .await
        .expect("insert");
    }
    let pings = rx.wait_for("sync + 5 exists", WAIT, |p| p.len() >= 6).await;
    let first = &pings[0];
    assert_eq!(first.header("X-Goog-Resource-State"), Some("sync"));
    assert_eq!(first.header("X-Goog-Message-Number"), Some("1"));
    for p in &pings {
        assert_eq!(p.body_len, 0);
        assert_eq!(p.header("User-Agent"), Some("APIs-Google"));
        assert_eq!(p.header("Content-Length"), Some("0"));
        assert_eq!(p.header("X-Goog-Channel-ID"), Some("chan-shape"));
        assert_eq!(p.header("X-Goog-Channel-Token"), Some("chan-token-1"));
        assert_eq!(p.header("X-Goog-Resource-ID"), ch["resourceId"].as_str());
        assert!(p
            .header("X-Goog-Resource-URI")
            .is_some_and(|u| u.contains("/events")));
        let exp = p
            .header("X-Goog-Channel-Expiration")
            .expect("expiration header");
        assert!(
            chrono::DateTime::parse_from_rfc2822(exp).is_ok() && exp.ends_with(" GMT"),
            "{exp}"
        );
    }
    let numbers: Vec<u64> = pings[1..]
        .iter()
        .map(|p| {
            p.header("X-Goog-Message-Number")
                .and_then(|n| n.parse().ok())
                .expect("number")
        })
        .collect();
    assert!(pings[1..]
        .iter()
        .all(|p| p.header("X-Goog-Resource-State") == Some("exists")));
    let mut sorted = numbers.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "numbers not unique: {numbers:?}");
    assert!(sorted[0] > 1);

    // A channel without a token sends no token header.
    let (_, _) = api
        .post(
            "/calendars/primary/events/watch",
            json!({"id": "chan-notoken", "type": "web_hook", "address": rx.url}),
        )
        .await;
    let pings = rx
        .wait_for("sync of the second channel", WAIT, |p| {
            p.iter()
                .any(|x| x.header("X-Goog-Channel-ID") == Some("chan-notoken"))
        })
        .await;
    let sync = pings
        .iter()
        .find(|x| x.header("X-Goog-Channel-ID") == Some("chan-notoken"))
        .expect("sync");
    assert_eq!(sync.header("X-Goog-Channel-Token"), None);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp14_sync_can_arrive_before_the_watch_response() {
    let emu = emu::start_default().await;
    emu.set_push(PushKnobs {
        sync_before_response: true,
        ..Default::default()
    });
    let api = Api::new(&emu).await;
    let rx = Receiver::start(vec![200]).await;
    let (status, _) = api
        .post(
            "/calendars/primary/events/watch",
            watch_body("chan-early", &rx.url),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        rx.pings().len(),
        1,
        "the sync message had not arrived when watch answered"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp15_knobs_drop_duplicate_and_coalesce() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let rx = Receiver::start(vec![200]).await;
    api.post(
        "/calendars/primary/events/watch",
        watch_body("chan-k", &rx.url),
    )
    .await;
    rx.wait_for("sync", WAIT, |p| p.len() == 1).await;
    emu.set_push(PushKnobs {
        drop_rate: 1.0,
        ..Default::default()
    });
    emu.edit(SERVICE_ACCOUNT, Edit::Insert(event("dropped", 3)), true)
        .await
        .expect("insert");
    assert_eq!(emu.counters().pings_dropped, 1);
    emu.set_push(PushKnobs {
        duplicate_rate: 1.0,
        ..Default::default()
    });
    emu.edit(SERVICE_ACCOUNT, Edit::Insert(event("doubled", 3)), true)
        .await
        .expect("insert");
    rx.wait_for("two copies", WAIT, |p| p.len() == 3).await;
    emu.set_push(PushKnobs {
        coalesce_ms: 300,
        ..Default::default()
    });
    for i in 0..10 {
        emu.edit(
            SERVICE_ACCOUNT,
            Edit::Insert(event(&format!("c{i}"), 4)),
            true,
        )
        .await
        .expect("insert");
    }
    rx.wait_for("one coalesced ping", WAIT, |p| p.len() >= 4)
        .await;
    let delivered = emu::wait_until("all deliveries settled", WAIT, || {
        let c = emu.counters();
        (c.pings_delivered + c.pings_failed == c.pings_sent.values().sum::<u64>())
            .then_some(c.pings_delivered)
    })
    .await;
    assert_eq!(delivered, 4, "10 changes in the window must make one ping");
    assert_eq!(rx.pings().len(), 4);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp16_server_errors_are_retried_and_other_statuses_are_not() {
    let emu = emu::start_default().await;
    emu.set_push(PushKnobs {
        retry_base_ms: 10,
        ..Default::default()
    });
    let api = Api::new(&emu).await;
    let flaky = Receiver::start(vec![503, 500, 200]).await;
    api.post(
        "/calendars/primary/events/watch",
        watch_body("chan-flaky", &flaky.url),
    )
    .await;
    flaky
        .wait_for("sync delivered after two retries", WAIT, |p| p.len() == 3)
        .await;
    let refusing = Receiver::start(vec![404]).await;
    api.post(
        "/calendars/primary/events/watch",
        watch_body("chan-404", &refusing.url),
    )
    .await;
    emu::wait_until("the 404 delivery to count as failed", WAIT, || {
        (emu.counters().pings_failed == 1).then_some(())
    })
    .await;
    assert_eq!(refusing.pings().len(), 1, "a 404 answer was retried");
    emu.edit(
        SERVICE_ACCOUNT,
        Edit::Insert(event("after errors", 5)),
        true,
    )
    .await
    .expect("insert");
    refusing
        .wait_for(
            "the channel still delivers after an error answer",
            WAIT,
            |p| p.len() == 2,
        )
        .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp17_expired_channels_go_silent_and_overlapping_channels_all_deliver() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let rx = Receiver::start(vec![200]).await;
    let soon = (chrono::Utc::now().timestamp_millis() + 1500).to_string();
    api.post(
        "/calendars/primary/events/watch",
        json!({"id": "short", "type": "web_hook", "address": rx.url, "expiration": soon}),
    )
    .await;
    api.post(
        "/calendars/primary/events/watch",
        watch_body("long", &rx.url),
    )
    .await;
    emu.edit(SERVICE_ACCOUNT, Edit::Insert(event("both", 6)), true)
        .await
        .expect("insert");
    let by = |p: &[crate::emu::Ping], id: &str| {
        p.iter()
            .filter(|x| {
                x.header("X-Goog-Channel-ID") == Some(id)
                    && x.header("X-Goog-Resource-State") == Some("exists")
            })
            .count()
    };
    rx.wait_for("both channels deliver", WAIT, |p| {
        by(p, "short") == 1 && by(p, "long") == 1
    })
    .await;
    let expiry = soon.parse::<i64>().expect("ms");
    emu::wait_until("the short channel to expire", WAIT, || {
        (chrono::Utc::now().timestamp_millis() > expiry).then_some(())
    })
    .await;
    emu.edit(SERVICE_ACCOUNT, Edit::Insert(event("only long", 6)), true)
        .await
        .expect("insert");
    let pings = rx
        .wait_for("the long channel delivers", WAIT, |p| by(p, "long") == 2)
        .await;
    assert_eq!(by(&pings, "short"), 1, "an expired channel delivered");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp18_stop_answers_204_then_404_and_refuses_other_clients() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let (_, ch) = api
        .post(
            "/calendars/primary/events/watch",
            watch_body("chan-stop", "http://127.0.0.1:9/x"),
        )
        .await;
    let stop = json!({"id": "chan-stop", "resourceId": ch["resourceId"]});
    let (status, body) = api
        .post(
            "/channels/stop",
            json!({"id": "chan-stop", "resourceId": "wrong"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Channel 'chan-stop' not found for project '")));
    emu.register_refresh_token(
        "client-2",
        "s3cret",
        "refresh-2",
        "other-user@example.com",
        &[emu::CALENDAR_SCOPE],
    );
    let other = refresh_api(&emu, "client-2", "s3cret", "refresh-2").await;
    assert_eq!(
        other.post("/channels/stop", stop.clone()).await.0,
        403,
        "another client stopped our channel"
    );
    let (status, body) = api.post("/channels/stop", stop.clone()).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(api.post("/channels/stop", stop).await.0, 404, "second stop");
    assert_eq!(
        api.post(
            "/calendars/primary/events/watch",
            watch_body("chan-stop", "http://127.0.0.1:9/x")
        )
        .await
        .0,
        400,
        "ids are never reused"
    );
    emu.shutdown().await;
}

async fn refresh_api(emu: &gcal_emulator::Emulator, id: &str, secret: &str, refresh: &str) -> Api {
    let resp = emu::http()
        .post(emu.token_uri())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", id),
            ("client_secret", secret),
            ("refresh_token", refresh),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    Api {
        root: emu.api_root(),
        token: body["access_token"].as_str().expect("token").into(),
        http: emu::http(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cp21_token_endpoint_checks_signature_audience_times_subjects_and_scopes() {
    let emu = emu::start_default().await;
    let (key, uri) = (emu.service_account_json(), emu.token_uri());
    let grant = |claims: Claims<'static>, key: &str| emu::assertion(key, &uri, &claims);
    let (status, ok) = emu::token_response(&emu, &grant(Claims::default(), &key)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (ok["token_type"].as_str(), ok["expires_in"].as_u64()),
        (Some("Bearer"), Some(3599))
    );
    for (claims, key_file, why) in [
        (
            Claims::default(),
            emu.foreign_service_account_json(),
            "unknown key",
        ),
        (
            Claims {
                aud: Some("https://example.com/token".into()),
                ..Default::default()
            },
            key.clone(),
            "audience",
        ),
        (
            Claims {
                lifetime: 3601,
                ..Default::default()
            },
            key.clone(),
            "lifetime over an hour",
        ),
        (
            Claims {
                iat_offset: -7200,
                ..Default::default()
            },
            key.clone(),
            "expired",
        ),
        (
            Claims {
                iat_offset: 600,
                ..Default::default()
            },
            key.clone(),
            "issued in the future",
        ),
    ] {
        let (status, body) = emu::token_response(&emu, &grant(claims, &key_file)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{why}: {body}"
        );
    }
    let (status, body) = emu::token_response(
        &emu,
        &grant(
            Claims {
                scope: "calendar",
                ..Default::default()
            },
            &key,
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let dwd = Claims {
        sub: Some("boss@example.com"),
        ..Default::default()
    };
    let (status, body) = emu::token_response(&emu, &grant(dwd, &key)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized_client")),
        "subject not delegated"
    );
    emu.allow_subject(SERVICE_ACCOUNT, "boss@example.com")
        .expect("allow");
    let (status, body) = emu::token_response(
        &emu,
        &grant(
            Claims {
                sub: Some("boss@example.com"),
                ..Default::default()
            },
            &key,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let as_boss = Api {
        root: emu.api_root(),
        token: body["access_token"].as_str().expect("token").into(),
        http: emu::http(),
    };
    let (_, cal) = as_boss.get("/calendars/primary", &[]).await;
    assert_eq!(
        cal["id"], "boss@example.com",
        "primary of the impersonated user"
    );

    // Refresh-token grant.
    emu.register_refresh_token(
        "client-1",
        "s3cret",
        "refresh-1",
        "user@example.com",
        &[emu::READONLY_SCOPE],
    );
    let user = refresh_api(&emu, "client-1", "s3cret", "refresh-1").await;
    assert_eq!(user.get("/calendars/primary/events", &[]).await.0, 200);
    let (status, body) = user.post("/calendars/primary/events", event("x", 1)).await;
    assert_eq!(
        (status, reason(&body)),
        (403, "insufficientPermissions"),
        "read-only scope wrote"
    );
    let bad = emu::http()
        .post(emu.token_uri())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
            ("refresh_token", "revoked"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status().as_u16(), 400);

    // Access tokens: missing, unknown and expired are 401.
    let api = Api::new(&emu).await;
    let anon = emu::http()
        .get(format!("{}/calendars/primary/events", emu.api_root()))
        .send()
        .await
        .expect("send");
    assert_eq!(anon.status().as_u16(), 401);
    let wrong = Api {
        token: "ya29.nope".into(),
        ..Api::new(&emu).await
    };
    assert_eq!(wrong.get("/calendars/primary/events", &[]).await.0, 401);
    emu.revoke_access_tokens();
    let (status, body) = api.get("/calendars/primary/events", &[]).await;
    assert_eq!((status, reason(&body)), (401, "authError"));
    let short = emu::start(Options {
        allow_http: true,
        access_token_lifetime: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let expired = Api::new(&short).await;
    assert_eq!(
        expired.get("/calendars/primary/events", &[]).await.0,
        401,
        "expired access token accepted"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp15_knobs_reorder_visibility_lag_and_delivery_after_stop() {
    let emu = emu::start_default().await;
    let api = Api::new(&emu).await;
    let rx = Receiver::start(vec![200]).await;
    let (_, ch) = api
        .post(
            "/calendars/primary/events/watch",
            watch_body("chan-r", &rx.url),
        )
        .await;
    rx.wait_for("sync", WAIT, |p| p.len() == 1).await;

    // Reorder: message numbers arrive out of order.
    emu.set_push(PushKnobs {
        reorder_ms: 200,
        number_gap_rate: 0.0,
        ..Default::default()
    });
    for i in 0..20 {
        emu.edit(
            SERVICE_ACCOUNT,
            Edit::Insert(event(&format!("r{i}"), 7)),
            true,
        )
        .await
        .expect("insert");
    }
    let pings = rx
        .wait_for("20 reordered pings", WAIT, |p| p.len() == 21)
        .await;
    let numbers: Vec<u64> = pings[1..]
        .iter()
        .filter_map(|p| p.header("X-Goog-Message-Number")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).any(|w| w[0] > w[1]),
        "reorder knob delivered in order: {numbers:?}"
    );

    // Visibility lag: the ping arrives while list does not show the change yet.
    emu.set_push(PushKnobs {
        visibility_lag_ms: 1500,
        ..Default::default()
    });
    let edit = {
        let emu_ctl = (*emu).clone();
        tokio::spawn(async move {
            emu_ctl
                .edit(SERVICE_ACCOUNT, Edit::Insert(event("late", 8)), true)
                .await
        })
    };
    rx.wait_for("the ping of the lagging change", WAIT, |p| p.len() == 22)
        .await;
    let (items, _) = api
        .list_all("/calendars/primary/events", &[("q", "late")])
        .await;
    assert!(
        items.is_empty(),
        "the change was visible when its ping arrived"
    );
    edit.await.expect("join").expect("insert");
    let (items, _) = api
        .list_all("/calendars/primary/events", &[("q", "late")])
        .await;
    assert_eq!(items.len(), 1);

    // After stop: a stopped channel keeps delivering for the window.
    emu.set_push(PushKnobs {
        after_stop_ms: 60_000,
        ..Default::default()
    });
    assert_eq!(
        api.post(
            "/channels/stop",
            json!({"id": "chan-r", "resourceId": ch["resourceId"]})
        )
        .await
        .0,
        204
    );
    emu.edit(SERVICE_ACCOUNT, Edit::Insert(event("after stop", 9)), true)
        .await
        .expect("insert");
    rx.wait_for("a ping after stop", WAIT, |p| p.len() == 23)
        .await;
    emu.set_push(PushKnobs::default());
    emu.edit(SERVICE_ACCOUNT, Edit::Insert(event("silent", 9)), true)
        .await
        .expect("insert");
    assert_eq!(
        emu.counters().pings_sent.get("exists").copied(),
        Some(22),
        "a stopped channel sent after its window"
    );
    emu.shutdown().await;
}

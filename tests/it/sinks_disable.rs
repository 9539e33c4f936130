//! Disabled sinks: a receiver that answers 410 Gone, or a sink whose lag
//! passes `max_lag`, is disabled durably (across restarts), holds no
//! records from retention while disabled, and delivers again after
//! `POST /v1/sinks/{name}/reset` or being edited out and back in.

use std::time::Duration;

use gcal_syncd::emulator::Edit;
use serde_json::Value;

use crate::emu::{event, Receiver};
use crate::harness::{metric, Harness, Setup, CAL};
use crate::sinks::seqs;

const WAIT: Duration = Duration::from_secs(60);

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"webhook.secret\"\n{extra}"
    )
}

/// The sink named `name` on `/v1/sinks`, once `ok` holds for it.
async fn sink_when(h: &Harness, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    crate::emu::wait_until_async(what, WAIT, || async {
        let (_, body) = h.get("/v1/sinks").await;
        let sink = body["sinks"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?
            .clone();
        ok(&sink).then_some(sink)
    })
    .await
}

async fn post(h: &Harness, path: &str) -> (u16, Value) {
    let r = crate::emu::http()
        .post(format!("http://{}{path}", h.api))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_answered_410_stays_disabled_across_restarts_holds_no_records_and_is_reset() {
    let gone = Receiver::start(vec![410, 200]).await;
    let ok = Receiver::start(vec![200]).await;
    let tail = format!(
        "[feed]\nretention = \"1s\"\n{}{}",
        webhook("gone", &gone.url, ""),
        webhook("ok", &ok.url, "")
    );
    let mut h = Harness::start(
        "sink-gone",
        Setup {
            tail,
            ..Default::default()
        },
    )
    .await;
    h.emu
        .edit(CAL, Edit::Insert(event("before", 2)), true)
        .await
        .expect("insert");
    let off = sink_when(&h, "gone", "the 410 sink disabled", |s| {
        s["state"] == "disabled"
    })
    .await;
    assert!(
        off["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("410")),
        "{off}"
    );
    assert_eq!(gone.pings().len(), 1, "a disabled sink was tried again");
    let ok_first = ok
        .wait_for("the other sink's delivery", WAIT, |p| !p.is_empty())
        .await;
    let first_seq = seqs(&ok_first[0])[0];
    let scrape = h.scrape().await;
    assert_eq!(
        metric(&scrape, "gcal_syncd_sink_disabled", &[("sink", "gone")]),
        1.0
    );
    assert_eq!(
        metric(&scrape, "gcal_syncd_sink_disabled", &[("sink", "ok")]),
        0.0
    );
    assert_eq!(
        metric(
            &scrape,
            "gcal_syncd_sink_deliveries_total",
            &[("sink", "gone"), ("result", "gone")]
        ),
        1.0
    );

    // Retention does not wait for the disabled sink (cursor 0): the
    // record goes once the healthy sink has it.
    crate::emu::wait_until_async("the record removed by retention", WAIT, || async {
        let (status, _) = h.get("/v1/changes?after=0").await;
        (status == 410).then_some(())
    })
    .await;

    // Disabled is durable: after a restart nothing is sent to it.
    h.stop_daemon().await;
    h.start_daemon().await;
    sink_when(&h, "gone", "still disabled after a restart", |s| {
        s["state"] == "disabled"
    })
    .await;
    assert_eq!(gone.pings().len(), 1);

    // Reset: it delivers again, from after what retention removed.
    assert_eq!(post(&h, "/v1/sinks/nosuch/reset").await.0, 404);
    assert_eq!(h.get("/v1/sinks/gone/reset").await.0, 405);
    let (status, body) = post(&h, "/v1/sinks/gone/reset").await;
    assert_eq!(
        (status, &body["restarted"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    sink_when(&h, "gone", "delivering after the reset", |s| {
        s["state"] == "delivering"
    })
    .await;
    h.emu
        .edit(CAL, Edit::Insert(event("after", 3)), true)
        .await
        .expect("insert");
    let got = gone
        .wait_for("a delivery after the reset", WAIT, |p| p.len() >= 2)
        .await;
    let after: Vec<u64> = got[1..].iter().flat_map(seqs).collect();
    assert!(
        !after.is_empty() && after.iter().all(|&s| s > first_seq),
        "the reset sink got {after:?}, records retention had removed (first was {first_seq})"
    );
    let (status, body) = post(&h, "/v1/sinks/gone/reset").await;
    assert_eq!(
        (status, &body["restarted"]),
        (200, &Value::Bool(false)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_past_max_lag_is_disabled_and_editing_it_out_and_back_enables_it() {
    let down = Receiver::start(vec![500]).await;
    let mut h = Harness::start(
        "sink-max-lag",
        Setup {
            tail: webhook("app", &down.url, "max_lag = \"1s\"\n"),
            ..Default::default()
        },
    )
    .await;
    h.emu
        .edit(CAL, Edit::Insert(event("lagging", 2)), true)
        .await
        .expect("insert");
    let off = sink_when(&h, "app", "the lagging sink disabled", |s| {
        s["state"] == "disabled"
    })
    .await;
    assert!(
        off["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_lag")),
        "{off}"
    );
    let tries = down.pings().len();

    // Edited out (a reload), it is gone from /v1/sinks; edited back in
    // (another reload, here with a healthy receiver), it delivers from its
    // cursor: nothing was lost.
    h.set_tail("").await;
    crate::emu::wait_until_async("no sinks", WAIT, || async {
        let (_, body) = h.get("/v1/sinks").await;
        body["sinks"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
    let up = Receiver::start(vec![200]).await;
    h.set_tail(&webhook("app", &up.url, "")).await;
    let feed = h
        .wait_changes("the record", 0, WAIT, |c| !c.is_empty())
        .await;
    let want: Vec<u64> = feed.iter().filter_map(|c| c["seq"].as_u64()).collect();
    let got = up
        .wait_for("every record", WAIT, |p| {
            p.iter().flat_map(seqs).count() >= want.len()
        })
        .await;
    assert_eq!(got.iter().flat_map(seqs).collect::<Vec<_>>(), want);
    sink_when(&h, "app", "delivering", |s| s["state"] == "delivering").await;
    assert_eq!(
        down.pings().len(),
        tries,
        "the old receiver was tried again"
    );
}

//! A hiccup must not stall a calendar and a malformed answer must not lose
//! a change: token-endpoint failures are retried quickly for service
//! accounts too, a ping cuts a long backoff short, an outage shows in
//! status, and an item without a usable id fails its page instead of being
//! skipped past.

use std::time::Duration;

use gcal_syncd::emulator::{Edit, FaultKind, FaultRule};
use serde_json::json;

use crate::emu::{self, event};
use crate::harness::{last_seq, Harness, Setup, CAL};

/// Far below every long backoff these tests guard against (about 4 to 5
/// minutes before the fixes), far above what a healthy pass needs.
const QUICK: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(60);

fn fault(kind: FaultKind, method: &str, remaining: u32) -> FaultRule {
    FaultRule {
        kind,
        rate: 1.0,
        method: Some(method.into()),
        remaining: Some(remaining),
        slow_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_token_endpoint_errors_for_a_service_account_cost_a_retry_not_minutes() {
    let mut h = Harness::start("token-hiccup", Setup::default()).await;
    h.wait_idle_with_token(WAIT).await;
    h.stop_daemon().await;
    // The restarted daemon's first token request meets two 500s.
    h.emu
        .set_faults(vec![fault(FaultKind::Backend500, "token", 2)]);
    h.emu
        .edit(CAL, Edit::Insert(event("made while down", 2)), false)
        .await
        .expect("insert");
    h.start_daemon().await;
    let got = h
        .wait_changes("the change made while down", 0, QUICK, |c| !c.is_empty())
        .await;
    assert_eq!(got[0]["event"]["summary"], "made while down");
    assert_eq!(h.emu.counters().faults_injected, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_shows_in_status_and_a_ping_cuts_the_long_backoff_short() {
    let h = Harness::start(
        "ping-wakes",
        Setup {
            retry_base: "2s",
            ..Default::default()
        },
    )
    .await;
    h.wait_idle_with_token(WAIT).await;
    // Five failures in a row (2+4+8+16 s of backoff); after the fifth the
    // next retry waits 32 s (+-20%).
    h.emu
        .set_faults(vec![fault(FaultKind::Backend500, "events.list", 5)]);
    h.emu
        .edit(CAL, Edit::Insert(event("during the outage", 2)), true)
        .await
        .expect("insert");
    let cal = h.wait_state("backoff", WAIT).await;
    assert!(
        cal["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{cal}"
    );
    emu::wait_until("all five faults to be spent", WAIT, || {
        (h.emu.counters().faults_injected == 5).then_some(())
    })
    .await;
    // Google is back; a genuine ping retries after retry_base (2 s), not
    // after the backoff (at least 25.6 s), and both changes arrive.
    h.emu
        .edit(CAL, Edit::Insert(event("after the outage", 3)), true)
        .await
        .expect("insert");
    let got = h
        .wait_changes("both changes", 0, Duration::from_secs(15), |c| c.len() >= 2)
        .await;
    let summaries: Vec<&str> = got
        .iter()
        .filter_map(|c| c["event"]["summary"].as_str())
        .collect();
    assert!(
        summaries.contains(&"during the outage") && summaries.contains(&"after the outage"),
        "{summaries:?}"
    );
    let cal = h.wait_state("idle", WAIT).await;
    assert_eq!(cal["last_error"], json!(null), "{cal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_without_a_usable_id_fails_its_page_and_the_change_still_arrives() {
    let h = Harness::start("bad-item", Setup::default()).await;
    let before = h.wait_idle_with_token(WAIT).await;
    let seq = last_seq(&h.changes_after(0).await);
    h.emu
        .set_faults(vec![fault(FaultKind::BadItemId, "events.list", 1)]);
    let made = h
        .emu
        .edit(CAL, Edit::Insert(event("behind a bad item", 2)), true)
        .await
        .expect("insert");
    let got = h
        .wait_changes("the change behind the bad item", seq, QUICK, |c| {
            !c.is_empty()
        })
        .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["event_id"], made["id"]);
    assert_eq!(h.emu.counters().faults_injected, 1, "{before}");
}

/// 1200 forged pings carrying the calendar's real resource id: random
/// UUIDs (our channel ids' shape) and other junk. Only a few channels.stop
/// calls may be spent on them, and a genuine change still comes through at
/// once.
#[tokio::test(flavor = "multi_thread")]
async fn forged_pings_do_not_spend_the_accounts_quota() {
    let h = Harness::start("forged-orphans", Setup::default()).await;
    h.wait_idle_with_token(WAIT).await;
    let channels = h.emu.channels();
    let resource_id = channels["channels"][0]["resource_id"]
        .as_str()
        .expect("resource id")
        .to_string();
    let url = format!("http://{}/gcal/notify", h.hook);
    let http = emu::http();
    for i in 0..1200u32 {
        let id = if i % 2 == 0 {
            uuid_v4(i)
        } else {
            format!("forged-{i}")
        };
        let status = http
            .post(&url)
            .header("X-Goog-Channel-ID", id)
            .header("X-Goog-Resource-State", "exists")
            .header("X-Goog-Resource-ID", &resource_id)
            .header("X-Goog-Channel-Token", "guess")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16();
        assert_eq!(status, 404);
    }
    let seq = last_seq(&h.changes_after(0).await);
    h.emu
        .edit(CAL, Edit::Insert(event("genuine", 2)), true)
        .await
        .expect("insert");
    h.wait_changes("the genuine change", seq, QUICK, |c| !c.is_empty())
        .await;
    let stops = h
        .emu
        .counters()
        .calls
        .get("channels.stop")
        .copied()
        .unwrap_or(0);
    // Three per minute; the test may straddle a minute boundary.
    assert!(stops <= 6, "{stops} channels.stop calls for forged pings");
}

/// A version-4 UUID made from `n` (not random, but of the right shape).
fn uuid_v4(n: u32) -> String {
    format!("{n:08x}-1f2e-4d3c-8b4a-{:012x}", u64::from(n) * 7919)
}

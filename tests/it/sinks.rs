//! `[[sinks]]` of type webhook: every change reaches the receiver once it
//! acknowledges, in order, signed as Standard Webhooks, retried with the
//! same `webhook-id` while it fails, and not again after a restart.

use std::time::Duration;

use base64::Engine as _;
use gcal_syncd::emulator::Edit;
use serde_json::Value;

use crate::emu::{event, Ping, Receiver};
use crate::harness::{metric, Harness, Setup, CAL, WEBHOOK_SECRET};

const WAIT: Duration = Duration::from_secs(60);

/// Checks a delivery's signature the way a receiver does, with ring and
/// base64 directly (not the daemon's signer).
fn verify(p: &Ping, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("key");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let (Some(id), Some(ts), Some(sig)) = (
        p.header("webhook-id"),
        p.header("webhook-timestamp"),
        p.header("webhook-signature"),
    ) else {
        return false;
    };
    let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", &p.body].concat();
    sig.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|s| b64.decode(s).ok())
            .is_some_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok())
    })
}

/// The seqs of one delivery's `{"changes": [...]}`.
pub(crate) fn seqs(p: &Ping) -> Vec<u64> {
    let body: Value = serde_json::from_slice(&p.body).expect("json");
    body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["seq"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_gets_every_change_in_order_signed_and_retried_until_acknowledged() {
    // The first two attempts fail, every later one is acknowledged.
    let receiver = Receiver::start(vec![500, 503, 200]).await;
    // A second sink that wants another calendar's records only.
    let quiet = Receiver::start(vec![200]).await;
    let tail = format!(
        "[[sinks]]\nname = \"app\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"webhook.secret\"\nbatch_max = 2\naccounts = [\"emu\"]\n\
         [[sinks]]\nname = \"quiet\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"webhook.secret\"\ncalendars = [\"someone-else\"]\n",
        receiver.url, quiet.url
    );
    let mut h = Harness::start(
        "sink-webhook",
        Setup {
            tail,
            ..Default::default()
        },
    )
    .await;
    for i in 0..3 {
        h.emu
            .edit(CAL, Edit::Insert(event(&format!("s{i}"), 2)), true)
            .await
            .expect("insert");
    }
    let feed = h.wait_changes("3 records", 0, WAIT, |c| c.len() >= 3).await;
    let want: Vec<u64> = feed.iter().filter_map(|c| c["seq"].as_u64()).collect();
    let got = receiver
        .wait_for("every record acknowledged", WAIT, |p| {
            p.len() > 2 && p[2..].iter().flat_map(seqs).count() >= want.len()
        })
        .await;
    assert!(
        got.iter().all(|p| verify(p, WEBHOOK_SECRET)),
        "a bad signature"
    );
    assert!(!verify(&got[0], "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    // The failed attempts carried the first batch, under one id.
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].header("webhook-id"), got[2].header("webhook-id"));
    assert_eq!(seqs(&got[0]), seqs(&got[2]));
    let acknowledged: Vec<u64> = got[2..].iter().flat_map(seqs).collect();
    assert_eq!(acknowledged, want, "each record once, in order");
    assert!(got.iter().all(|p| seqs(p).len() <= 2), "batch_max = 2");

    // /v1/sinks shows both caught up: the quiet one's filters moved its
    // cursor past the records it does not want.
    let last = want.last().copied().unwrap_or(0);
    let sinks = crate::emu::wait_until_async("both sinks caught up", WAIT, || async {
        let (_, body) = h.get("/v1/sinks").await;
        let all = body["sinks"].as_array()?.clone();
        all.iter()
            .all(|s| s["cursor"] == last && s["lag_records"] == 0)
            .then_some(all)
    })
    .await;
    assert_eq!(sinks.len(), 2);
    assert!(sinks
        .iter()
        .all(|s| s["state"] == "delivering" && s["type"] == "webhook"));
    assert!(sinks[0]["last_success"].is_string(), "{:?}", sinks[0]);
    assert!(quiet.pings().is_empty(), "the quiet sink got records");
    let scrape = h.scrape().await;
    let deliveries = |result| {
        metric(
            &scrape,
            "gcal_syncd_sink_deliveries_total",
            &[("sink", "app"), ("result", result)],
        )
    };
    let acknowledged = receiver.pings().len() - 2;
    assert_eq!(
        (deliveries("failed"), deliveries("ok")),
        (2.0, acknowledged as f64)
    );
    assert_eq!(
        metric(&scrape, "gcal_syncd_sink_lag_records", &[("sink", "app")]),
        0.0
    );

    // The cursor is durable: after a restart only new records are sent.
    h.stop_daemon().await;
    let before = receiver.pings().len();
    h.start_daemon().await;
    h.emu
        .edit(CAL, Edit::Insert(event("after restart", 3)), true)
        .await
        .expect("insert");
    let got = receiver
        .wait_for("the new record", WAIT, |p| p.len() > before)
        .await;
    assert_eq!(seqs(&got[before]), [want.last().copied().unwrap_or(0) + 1]);
}

/// Checks one delivery with the `standardwebhooks` Python package (the
/// specification's own library), under `secret`; true when it verifies.
fn python_verifies(p: &Ping, secret: &str) -> bool {
    use std::io::Write as _;
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .filter_map(|h| Some((h.to_string(), Value::from(p.header(h)?))))
            .collect();
    let script = "import json, os, sys\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  Webhook(os.environ['SECRET']).verify(sys.stdin.buffer.read(), json.loads(os.environ['HEADERS']))\n\
                  print('VERIFIED')\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .env("SECRET", secret)
        .env("HEADERS", Value::Object(headers).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&p.body)
        .expect("write the body");
    let out = child.wait_with_output().expect("python3");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("VERIFIED")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs python3 with the standardwebhooks package; .ci/run installs it"]
async fn the_standard_webhooks_python_library_accepts_our_signatures() {
    let ready = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks.webhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ready,
        "this test needs python3 with standardwebhooks; .ci/run installs it"
    );
    let receiver = Receiver::start(vec![200]).await;
    let tail = format!(
        "[[sinks]]\nname = \"app\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"webhook.secret\"\n",
        receiver.url
    );
    let h = Harness::start(
        "sink-python",
        Setup {
            tail,
            ..Default::default()
        },
    )
    .await;
    h.emu
        .edit(CAL, Edit::Insert(event("verified", 2)), true)
        .await
        .expect("insert");
    let got = receiver
        .wait_for("a delivery", WAIT, |p| !p.is_empty())
        .await;
    let first = got[0].clone();
    let verified = tokio::task::spawn_blocking(move || {
        (
            python_verifies(&first, WEBHOOK_SECRET),
            python_verifies(&first, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )
    })
    .await
    .expect("join");
    assert_eq!(
        verified,
        (true, false),
        "the library must accept our signature and refuse it under another secret"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_receiver_that_is_down_gets_everything_in_order_once_it_is_up() {
    // A free port, closed again: nothing listens there until later.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let tail = format!(
        "[[sinks]]\nname = \"app\"\ntype = \"webhook\"\nurl = \"http://{addr}/changes\"\nsecret_file = \"webhook.secret\"\nbatch_max = 2\n"
    );
    let h = Harness::start(
        "sink-down",
        Setup {
            tail,
            ..Default::default()
        },
    )
    .await;
    for i in 0..5 {
        h.emu
            .edit(CAL, Edit::Insert(event(&format!("d{i}"), 2)), true)
            .await
            .expect("insert");
    }
    let feed = h.wait_changes("5 records", 0, WAIT, |c| c.len() >= 5).await;
    let want: Vec<u64> = feed.iter().filter_map(|c| c["seq"].as_u64()).collect();
    let down = crate::emu::wait_until_async("the sink retrying", WAIT, || async {
        let (_, body) = h.get("/v1/sinks").await;
        let s = body["sinks"][0].clone();
        (s["state"] == "retrying").then_some(s)
    })
    .await;
    assert!(
        down["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{down}"
    );
    assert_eq!(down["lag_records"], want.len(), "{down}");
    assert!(down["pending_since"].is_string(), "{down}");

    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let receiver = Receiver::serve(listener, vec![200]);
    let got = receiver
        .wait_for("every record", WAIT, |p| {
            p.iter().flat_map(seqs).count() >= want.len()
        })
        .await;
    let seqs: Vec<u64> = got.iter().flat_map(seqs).collect();
    assert_eq!(seqs, want, "each record once, in order");
}

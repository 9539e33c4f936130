//! `gcal-syncd emulator` as a person uses it: it prints where it listens
//! and a ready credentials file first, its control API works over HTTP, and
//! SIGTERM stops it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::emu;

#[tokio::test(flavor = "multi_thread")]
async fn emulator_command_prints_url_and_credentials_and_serves_the_control_api() {
    let mut child = Command::new(crate::support::bin())
        .args(["emulator", "--listen", "127.0.0.1:0", "--allow-http"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("read");
    let second = lines.next().expect("a second line").expect("read");
    let url = first
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    let creds_path = second
        .strip_prefix("credentials: ")
        .expect("credentials line");
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(creds_path).expect("read creds"))
            .expect("json");
    assert_eq!(creds["type"], "service_account");
    assert_eq!(creds["token_uri"], json!(format!("{url}/token")));

    let http = emu::http();
    let ctl = format!("{url}/emulator/v1");
    let cal: Value = http
        .post(format!("{ctl}/calendars"))
        .json(&json!({"owner": creds["client_email"], "summary": "cli", "timeZone": "UTC"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = cal["id"].as_str().expect("calendar id").replace('@', "%40");
    let bulk: Value = http
        .post(format!("{ctl}/calendars/{id}/events:bulk"))
        .json(&json!({"events": (0..50).map(|i| emu::event(&format!("b{i}"), 1 + i % 28)).collect::<Vec<_>>()}))
        .send()
        .await
        .expect("bulk")
        .json()
        .await
        .expect("json");
    assert_eq!(bulk["inserted"], 50);
    let put = |body: Value| http.put(format!("{ctl}/faults")).json(&body).send();
    assert_eq!(
        put(json!([{"kind": "nope"}]))
            .await
            .expect("faults")
            .status()
            .as_u16(),
        400,
        "unknown fault kind accepted"
    );
    let ok = put(json!([{"kind": "backend_500", "method": "events.list", "remaining": 1}]))
        .await
        .expect("faults");
    assert_eq!(ok.status().as_u16(), 200);
    // The fault answers the next events.list, before authorization.
    let listed = http
        .get(format!("{url}/calendar/v3/calendars/{id}/events"))
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status().as_u16(), 500);
    let counters: Value = http
        .get(format!("{ctl}/counters"))
        .send()
        .await
        .expect("counters")
        .json()
        .await
        .expect("json");
    assert_eq!(counters["calls"]["events.list"], 1, "{counters}");
    assert_eq!(counters["faults_injected"], 1, "{counters}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = emu::wait_until("the emulator to exit", Duration::from_secs(20), || {
        child.try_wait().ok().flatten()
    })
    .await;
    assert_eq!(code.code(), Some(0));
}

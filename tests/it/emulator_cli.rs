//! `gcal-syncd emulator` as a person uses it: it prints where it listens
//! and a ready credentials file first, its control API works over HTTP, and
//! SIGTERM stops it.

use std::io::{BufRead, BufReader};
use std::path::Path;
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
    let third = lines.next().expect("a third line").expect("read");
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
    // The key is private to its owner, in a directory of its own.
    let creds_dir = Path::new(creds_path).parent().expect("dir").to_path_buf();
    assert_eq!(mode(Path::new(creds_path)), 0o600);
    assert_eq!(mode(&creds_dir), 0o700);
    let primary = third.strip_prefix("calendar: ").expect("calendar line");
    assert_eq!(primary, creds["client_email"], "{third}");

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
    let get = |path: String| {
        let http = http.clone();
        async move {
            let resp = http.get(path).send().await.expect("get");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("json"),
            )
        }
    };
    let (status, listed) = get(format!("{ctl}/calendars")).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["calendars"]
        .as_array()
        .expect("calendars")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        ids.contains(&primary) && ids.contains(&cal["id"].as_str().unwrap_or("")),
        "{listed}"
    );

    // `primary` is the printed calendar, in the control API too.
    let inserted: Value = http
        .post(format!("{ctl}/calendars/primary/events"))
        .json(&emu::event("by hand", 2))
        .send()
        .await
        .expect("insert")
        .json()
        .await
        .expect("json");
    let (status, events) = get(format!("{ctl}/calendars/primary/events")).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["items"][0]["id"], inserted["id"], "{events}");
    assert_eq!(events["items"].as_array().map(Vec::len), Some(1));
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
    assert!(!creds_dir.exists(), "{} left behind", creds_dir.display());
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
}

/// `emulator --help` lists every control endpoint, and every one of them
/// is routed (answers something other than "no such control endpoint").
#[tokio::test(flavor = "multi_thread")]
async fn the_help_lists_every_control_endpoint_and_each_one_is_served() {
    let out = Command::new(crate::support::bin())
        .args(["emulator", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    let emu = emu::start_default().await;
    let http = emu::http();
    let cal = emu
        .create_calendar(gcal_syncd::emulator::SERVICE_ACCOUNT, None, "routes", "UTC")
        .expect("calendar");
    let ev = emu
        .edit(
            &cal,
            gcal_syncd::emulator::Edit::Insert(emu::event("r", 1)),
            false,
        )
        .await
        .expect("event");
    let ev = ev["id"].as_str().expect("id");
    for (call, what) in gcal_syncd::emulator::CONTROL_API {
        assert!(
            help.contains(call) && help.contains(what),
            "help lacks {call}:\n{help}"
        );
        let (method, path) = call.split_once(' ').expect("method and path");
        let path = path
            .trim()
            .replace("{id}", &cal.replace('@', "%40"))
            .replace("{eventId}", ev);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = http
            .request(method, format!("{}/emulator/v1{path}", emu.url()))
            .send()
            .await
            .expect("send");
        let body = resp.text().await.unwrap_or_default();
        assert!(!body.contains("no such control endpoint"), "{call}: {body}");
    }
    emu.shutdown().await;
}

//! Proof that the emulator is shaped like Google and not like our own
//! client: Google's Python client library (google-api-python-client with
//! google-auth's service-account flow) runs a full sync, an incremental
//! sync, a 410 after invalidation, a watch and a stop against it.

use std::process::Command;

use crate::emu;
use crate::emu::TempDir;

fn python_ready() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import googleapiclient.discovery, google.oauth2.service_account",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs python3 with google-api-python-client and google-auth; .ci/run installs them"]
async fn googles_python_client_syncs_watches_and_stops() {
    assert!(
        python_ready(),
        "this test needs python3 with google-api-python-client and google-auth; .ci/run installs them"
    );
    let emu = emu::start_default().await;
    let dir = TempDir::new("python");
    let creds = dir.write("sa.json", &emu.service_account_json());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/google_client.py");
    let url = emu.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("EMULATOR_URL", url)
            .env("EMULATOR_CREDENTIALS", creds)
            .output()
    })
    .await
    .expect("join")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PYTHON CLIENT OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let counters = emu.counters();
    assert!(
        counters.calls.get("token").copied().unwrap_or(0) >= 1,
        "the Python client never asked for a token"
    );
    assert_eq!(counters.calls.get("channels.stop").copied(), Some(2));
    emu.shutdown().await;
}

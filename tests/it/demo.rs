//! `gcal-syncd demo`, the README's first command, runs its whole script
//! and exits 0 with every expected record checked.

use std::process::Command;

#[test]
fn demo_runs_to_completion_and_every_record_checks_out() {
    let out = Command::new(crate::support::bin())
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("run gcal-syncd demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every expected record arrived, none extra: OK"),
        "{stdout}"
    );
    for step in [
        "summary edit",
        "time change",
        "description-only edit",
        "deletion",
        "cancelled instance",
        "burst of 200",
        "forced 410",
        "channel renewal",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

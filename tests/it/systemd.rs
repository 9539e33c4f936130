//! The shipped systemd unit passes `systemd-analyze verify` (when the
//! machine has systemd-analyze) and keeps its hardening.

use std::process::Command;

use crate::support::{bin, TempDir};

const UNIT: &str = include_str!("../../systemd/gcal-syncd.service");

fn have_systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The unit with ExecStart pointed at the binary under test, which
/// `verify` requires to exist.
fn unit_for_test(dir: &TempDir) -> std::path::PathBuf {
    dir.write(
        "gcal-syncd.service",
        &UNIT.replace("/usr/local/bin/gcal-syncd", bin()),
    )
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed on this machine");
        return;
    }
    let dir = TempDir::new("unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_for_test(&dir))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("gcal-syncd.service"))
        .collect();
    assert!(ours.is_empty(), "warnings about the unit: {ours:?}");
}

#[test]
fn unit_exposure_stays_at_or_below_two() {
    if !have_systemd_analyze() {
        eprintln!("SKIPPED: systemd-analyze is not installed on this machine");
        return;
    }
    let dir = TempDir::new("exposure");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_for_test(&dir))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for gcal-syncd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0");
}

#[test]
fn unit_has_the_lifecycle_the_daemon_expects() {
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "DynamicUser=yes",
        "StateDirectory=gcal-syncd",
        "WatchdogSec=",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}"
        );
    }
}

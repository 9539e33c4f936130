//! The shipped systemd unit passes `systemd-analyze verify` and keeps its
//! hardening. The first two need systemd-analyze (.ci/run installs it).

use std::process::Command;

use crate::support::{bin, require_tools, TempDir};

const UNIT: &str = include_str!("../../systemd/gcal-syncd.service");

/// systemd-analyze, without libfaketime: .ci/run runs the suite once more
/// with the clock moved ahead through `LD_PRELOAD`, which systemd-analyze
/// does not survive. The unit's checks do not depend on the date.
fn systemd_analyze() -> Command {
    require_tools(&["systemd-analyze"]);
    let mut cmd = Command::new("systemd-analyze");
    cmd.env_remove("LD_PRELOAD");
    cmd
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
#[ignore = "needs systemd-analyze; .ci/run installs it"]
fn unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("unit");
    let out = systemd_analyze()
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
#[ignore = "needs systemd-analyze; .ci/run installs it"]
fn unit_exposure_stays_at_or_below_two() {
    let dir = TempDir::new("exposure");
    let out = systemd_analyze()
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
        "Documentation=file:/usr/local/share/doc/gcal-syncd/README.md",
        // config.example.toml's credentials_file = "%d/clinic.json".
        "LoadCredential=clinic.json:/etc/gcal-syncd/clinic.json",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}"
        );
    }
}

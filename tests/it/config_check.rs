//! `check-config` and the config loader: every class of error names
//! `file:line:col: key: message`, all errors of a file are reported, and the
//! shipped config.example.toml passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use gcal_syncd::config::Config;

use crate::support::{bin, dummy_service_account, TempDir};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config/invalid");

/// A temp dir holding the credentials files the fixtures refer to.
fn credentials_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dummy_service_account(&dir, "sa.json");
    dir.write(
        "external.json",
        r#"{"type":"external_account","audience":"x"}"#,
    );
    dir.write(
        "incomplete.json",
        r#"{"type":"authorized_user","client_id":"id"}"#,
    );
    std::fs::create_dir_all(dir.path().join("a-directory")).expect("mkdir");
    dir
}

fn fixtures() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    assert!(out.len() >= 10, "fixtures missing");
    out
}

fn expectations(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .collect()
}

/// Copies a fixture next to the credentials so relative paths resolve.
fn place(fixture: &Path, dir: &TempDir) -> PathBuf {
    let text = std::fs::read_to_string(fixture).expect("read fixture");
    dir.write(
        fixture.file_name().and_then(|n| n.to_str()).expect("name"),
        &text,
    )
}

#[test]
fn invalid_configs_name_file_line_column_key_and_message() {
    let dir = credentials_dir("invalid");
    for fixture in fixtures() {
        let path = place(&fixture, &dir);
        let text = std::fs::read_to_string(&path).expect("read");
        let err = match Config::load(&path) {
            Ok(_) => panic!("{} was accepted", fixture.display()),
            Err(e) => e.to_string(),
        };
        let expected = expectations(&text);
        assert!(
            !expected.is_empty(),
            "{} has no # expect: line",
            fixture.display()
        );
        for want in expected {
            assert!(
                err.contains(want),
                "{}:\n want: {want}\n got:\n{err}",
                fixture.display()
            );
        }
        assert!(
            !err.contains("SECRET-KEY-MATERIAL"),
            "a secret leaked into: {err}"
        );
    }
}

#[test]
fn all_errors_of_a_file_are_reported_in_file_order() {
    let dir = credentials_dir("many");
    let path = place(&Path::new(FIXTURES).join("many_errors.toml"), &dir);
    let err = Config::load(&path).expect_err("invalid").0;
    let want = expectations(&std::fs::read_to_string(&path).expect("read")).len();
    assert_eq!(err.len(), want, "{err:#?}");
    let positions: Vec<_> = err.iter().map(|e| e.position).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}

#[test]
fn a_toml_syntax_error_is_reported_alone() {
    let dir = credentials_dir("syntax");
    let path = place(&Path::new(FIXTURES).join("not_toml.toml"), &dir);
    let err = Config::load(&path).expect_err("invalid").0;
    assert_eq!(
        err.len(),
        1,
        "consequential errors after the syntax error: {err:#?}"
    );
}

#[test]
fn check_config_prints_warnings_before_its_verdict() {
    let dir = credentials_dir("warnings");
    let path = dir.write(
        "config.toml",
        "[hook]\npublic_url = \"http://hooks.example.com/gcal/notify\"\n\
         [[accounts]]\nname = \"clinic\"\ncredentials_file = \"sa.json\"\ncalendars = [\"primary\"]\n",
    );
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("warning: hook.public_url"), "{stdout}");
    assert!(
        lines[1].ends_with("OK (1 account(s), 1 warning(s))"),
        "{stdout}"
    );
}

#[test]
fn example_config_passes_check_config() {
    let dir = credentials_dir("example");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .expect("read example");
    // As systemd runs it: LoadCredential= has put clinic.json into the
    // credentials directory, and the example names it %d/clinic.json.
    let creds = TempDir::new("example-credentials");
    dummy_service_account(&creds, "clinic.json");
    let path = dir.write("config.toml", &example);
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 account(s), 0 warning(s))"));

    // Without the variable, the error names the key and the variable.
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "accounts[0].credentials_file: %d/ stands for $CREDENTIALS_DIRECTORY, which is not set"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        2,
        "one error and the count: {stderr}"
    );

    let path = dir.write(
        "config-plain.toml",
        &example.replace("%d/clinic.json", "sa.json"),
    );
    let cfg = Config::load(&path).expect("valid");
    assert_eq!(cfg.hook.public_url.path(), "/gcal/notify");
    assert_eq!(cfg.channels.ttl.as_secs(), 7 * 86400);
    assert_eq!(cfg.sync.page_size, 2500);
}

#[test]
fn check_config_exits_78_and_prints_every_error() {
    let dir = credentials_dir("exit78");
    let path = place(&Path::new(FIXTURES).join("many_errors.toml"), &dir);
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("6 error(s)"), "{stderr}");
    assert!(
        stderr.contains("hook.listen") && stderr.contains("accounts[0].colour"),
        "{stderr}"
    );
}

#[test]
fn check_config_finds_the_file_through_the_environment() {
    let dir = credentials_dir("env");
    let good = dir.write(
        "env.toml",
        "[hook]\npublic_url = \"https://h.example.com/n\"\n[[accounts]]\nname = \"a\"\ncredentials_file = \"sa.json\"\ncalendars = \"all\"\n",
    );
    let out = Command::new(bin())
        .arg("check-config")
        .env("GCAL_SYNCD_CONFIG", &good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = Command::new(bin())
        .arg("check-config")
        .env("GCAL_SYNCD_CONFIG", dir.path().join("absent.toml"))
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("absent.toml: cannot read the configuration file"));
}

#[test]
fn run_exits_78_on_a_bad_config() {
    let dir = credentials_dir("run78");
    let path = place(&Path::new(FIXTURES).join("bad_cron.toml"), &dir);
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
}

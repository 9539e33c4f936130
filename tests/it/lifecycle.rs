//! The real binary under signals: start on ports 0, reload on SIGHUP (a bad
//! file keeps the running config), stop on SIGTERM with exit 0 within the
//! drain bound, and no secret in any log line.

use std::time::Duration;

use crate::support::{
    daemon_config, dummy_service_account, http_get, Daemon, TempDir, DUMMY_PRIVATE_KEY,
};

const API_TOKEN: &str = "api-token-value-7f3a";

fn start(dir: &TempDir) -> (Daemon, String, String) {
    dir.write("config.toml", &daemon_config(dir, ""));
    dir.write("api-token", API_TOKEN);
    let mut daemon = Daemon::spawn(&["run", "--config", "config.toml"], dir.path());
    let line = daemon.wait_for_line("gcal-syncd started", Duration::from_secs(30));
    (
        daemon,
        Daemon::field(&line, "hook"),
        Daemon::field(&line, "api"),
    )
}

fn assert_no_secrets(log: &[String]) {
    let key_marker = DUMMY_PRIVATE_KEY.split("\\n").nth(1).expect("marker line");
    for line in log {
        assert!(!line.contains(API_TOKEN), "API token in log: {line}");
        assert!(!line.contains(key_marker), "private key in log: {line}");
    }
}

#[test]
fn reload_keeps_a_good_config_and_rejects_a_bad_one_then_stops_cleanly() {
    let dir = TempDir::new("lifecycle");
    let (mut daemon, hook, api) = start(&dir);
    assert_eq!(http_get(&api, "/healthz").0, 200);
    assert_eq!(http_get(&hook, "/healthz").0, 200);
    assert_eq!(http_get(&api, "/nope").0, 404);

    // A changed, valid config is applied.
    dir.write(
        "config.toml",
        &daemon_config(&dir, ", \"team@group.calendar.google.com\""),
    );
    daemon.signal("HUP");
    daemon.wait_for_line("configuration reloaded", Duration::from_secs(20));

    // An invalid one is logged with its errors and the daemon keeps serving.
    dir.write("config.toml", "[hook]\nlisten = \"not an address\"\n");
    daemon.signal("HUP");
    daemon.wait_for_line("hook.listen", Duration::from_secs(20));
    daemon.wait_for_line(
        "reload rejected; keeping the running configuration",
        Duration::from_secs(20),
    );
    assert_eq!(
        http_get(&api, "/healthz").0,
        200,
        "unhealthy after a rejected reload"
    );

    daemon.signal("TERM");
    // Drain bound is 10 s; allow for a slow CI machine on top.
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(20)),
        Some(0),
        "log:\n{}",
        daemon.log.join("\n")
    );
    assert!(daemon.log.iter().any(|l| l.contains("stopped")));
    assert_no_secrets(&daemon.log);
}

#[test]
fn sigint_stops_as_well_and_the_store_can_be_reopened() {
    let dir = TempDir::new("sigint");
    let (mut daemon, _, _) = start(&dir);
    daemon.signal("INT");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
    let (mut again, _, api) = start(&dir);
    assert_eq!(http_get(&api, "/healthz").0, 200);
    again.signal("TERM");
    assert_eq!(again.wait_exit(Duration::from_secs(20)), Some(0));
    assert_no_secrets(&again.log);
}

#[test]
fn a_second_daemon_on_the_same_store_exits_with_a_clear_message() {
    let dir = TempDir::new("second");
    let (_first, _, _) = start(&dir);
    let mut second = Daemon::spawn(&["run", "--config", "config.toml"], dir.path());
    assert_eq!(second.wait_exit(Duration::from_secs(30)), Some(1));
    let store = dir.path().join("store");
    let want = format!(
        "the store at {} is in use by another process",
        store.display()
    );
    assert!(
        second.log.iter().any(|l| l.contains(&want)),
        "log:\n{}",
        second.log.join("\n")
    );
}

#[test]
fn under_journald_lines_carry_a_priority_and_no_timestamp_or_colour() {
    let dir = TempDir::new("journald");
    dir.write("config.toml", &daemon_config(&dir, ""));
    dir.write("api-token", API_TOKEN);
    let env = [("JOURNAL_STREAM", "8:123456")];
    let mut daemon = Daemon::spawn_with_env(&["run", "--config", "config.toml"], dir.path(), &env);
    let started = daemon.wait_for_line("gcal-syncd started", Duration::from_secs(30));
    assert!(started.starts_with("<6>"), "{started}");
    assert!(!started.contains('\u{1b}'), "ANSI escape in {started:?}");
    assert!(!started.starts_with("<6>20"), "timestamp in {started}");
    for key in ["version=", "config=", "hook=", "api=", "store="] {
        assert!(started.contains(key), "{key} missing in {started}");
    }
    let warning = daemon.wait_for_line("is not https", Duration::from_secs(10));
    assert!(warning.starts_with("<4>"), "{warning}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
}

/// systemd's `LoadCredential=` puts the secrets in `$CREDENTIALS_DIRECTORY`;
/// the configuration names them `%d/...`, and the daemon reads them there.
#[test]
fn secrets_named_with_percent_d_come_from_the_credentials_directory() {
    let dir = TempDir::new("credentials-directory");
    let creds = TempDir::new("credentials-directory-creds");
    dummy_service_account(&creds, "clinic.json");
    creds.write("api-token", API_TOKEN);
    let config = daemon_config(&dir, "")
        .replace("\"sa.json\"", "\"%d/clinic.json\"")
        .replace("\"api-token\"", "\"%d/api-token\"");
    dir.write("config.toml", &config);
    let dir_env = creds.path().to_string_lossy().to_string();
    let env = [("CREDENTIALS_DIRECTORY", dir_env.as_str())];

    let mut check = Daemon::spawn_with_env(
        &["check-config", "--config", "config.toml"],
        dir.path(),
        &env,
    );
    assert_eq!(
        check.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        check.log.join("\n")
    );

    let mut daemon = Daemon::spawn_with_env(&["run", "--config", "config.toml"], dir.path(), &env);
    let line = daemon.wait_for_line("gcal-syncd started", Duration::from_secs(30));
    let api = Daemon::field(&line, "api");
    // The API token was read from the credentials directory.
    assert_eq!(http_get(&api, "/v1/calendars").0, 401);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
    assert_no_secrets(&daemon.log);
}

//! `gcal-syncd demo`, the README's first command, runs its whole script
//! and exits 0 with every expected record checked; its files are private
//! and gone when it exits, also on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::Daemon;

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
    let dir = stdout
        .lines()
        .find_map(|l| l.split("store and config in ").nth(1))
        .expect("the demo names its directory");
    assert!(!Path::new(dir).exists(), "{dir} left behind");
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
        "every change pushed once, in order, signed: OK",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

/// `gcal-syncd demo` with `args`, and the directory its first line names.
fn spawn_demo(args: &[&str]) -> (Daemon, PathBuf) {
    let mut demo = Daemon::spawn_stdout(args, &std::env::temp_dir());
    let first = demo.wait_for_line("store and config in ", Duration::from_secs(60));
    let dir = PathBuf::from(first.rsplit("store and config in ").next().expect("dir"));
    (demo, dir)
}

/// Every file below `dir` (and `dir` itself) with a mode other than 0600
/// for files and 0700 for directories.
fn loose_modes(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::metadata(&p).expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} is {mode:o}", p.display()));
        }
        if meta.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
    out
}

#[test]
fn demo_keep_running_keeps_its_files_private_and_removes_them_on_ctrl_c() {
    let (mut demo, dir) = spawn_demo(&["demo", "--keep-running"]);
    demo.wait_for_line("still running", Duration::from_secs(300));
    let status = demo.wait_for_line(" status --config ", Duration::from_secs(10));
    let binary = status.trim().split(' ').next().expect("binary");
    assert!(
        Path::new(binary).is_absolute() && Path::new(binary).exists(),
        "not a runnable path: {status}"
    );
    let paste = demo.wait_for_line("sh feed-loop.sh", Duration::from_secs(10));
    assert!(paste.trim().starts_with("API=http://127.0.0.1:"), "{paste}");
    assert!(dir.join("service-account.json").exists());
    assert!(dir.join("store").is_dir());
    let loose = loose_modes(&dir);
    assert!(loose.is_empty(), "{loose:?}");
    demo.signal("INT");
    assert_eq!(demo.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn an_interrupted_demo_removes_its_directory_and_exits_130() {
    let (mut demo, dir) = spawn_demo(&["demo"]);
    demo.wait_for_line("== initial full sync", Duration::from_secs(60));
    demo.signal("TERM");
    assert_eq!(demo.wait_exit(Duration::from_secs(60)), Some(130));
    assert!(!dir.exists(), "{} left behind", dir.display());

    let (mut kept, dir) = spawn_demo(&["demo", "--keep-dir"]);
    kept.wait_for_line("== initial full sync", Duration::from_secs(60));
    kept.signal("INT");
    assert_eq!(kept.wait_exit(Duration::from_secs(60)), Some(130));
    assert!(dir.join("config.toml").exists(), "--keep-dir removed it");
    let _ = std::fs::remove_dir_all(&dir);
}

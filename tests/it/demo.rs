//! `gcal-syncd demo`, the README's first command, runs its whole script
//! and exits 0 with every expected record checked; its files are private
//! and gone when it exits, also on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

/// A running `gcal-syncd demo` whose stdout lines arrive on a channel.
struct Demo {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn spawn(args: &[&str]) -> Demo {
        let mut child = Command::new(crate::support::bin())
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line containing `needle`, waiting at most `within`.
    fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no {needle:?} within {within:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The directory named in the demo's first line.
    fn dir(&mut self) -> PathBuf {
        let first = self.wait_for("store and config in ", Duration::from_secs(60));
        PathBuf::from(first.rsplit("store and config in ").next().expect("dir"))
    }

    fn signal_and_wait(&mut self, signal: &str) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the demo did not exit after {signal}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut demo = Demo::spawn(&["demo", "--keep-running"]);
    let dir = demo.dir();
    demo.wait_for("still running", Duration::from_secs(300));
    let status = demo.wait_for(" status --config ", Duration::from_secs(10));
    let binary = status.trim().split(' ').next().expect("binary");
    assert!(
        Path::new(binary).is_absolute() && Path::new(binary).exists(),
        "not a runnable path: {status}"
    );
    let paste = demo.wait_for("sh feed-loop.sh", Duration::from_secs(10));
    assert!(paste.trim().starts_with("API=http://127.0.0.1:"), "{paste}");
    assert!(dir.join("service-account.json").exists());
    assert!(dir.join("store").is_dir());
    let loose = loose_modes(&dir);
    assert!(loose.is_empty(), "{loose:?}");
    assert_eq!(demo.signal_and_wait("-INT"), Some(0));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn an_interrupted_demo_removes_its_directory_and_exits_130() {
    let mut demo = Demo::spawn(&["demo"]);
    let dir = demo.dir();
    demo.wait_for("== initial full sync", Duration::from_secs(60));
    assert_eq!(demo.signal_and_wait("-TERM"), Some(130));
    assert!(!dir.exists(), "{} left behind", dir.display());

    let mut kept = Demo::spawn(&["demo", "--keep-dir"]);
    let dir = kept.dir();
    kept.wait_for("== initial full sync", Duration::from_secs(60));
    assert_eq!(kept.signal_and_wait("-INT"), Some(130));
    assert!(dir.join("config.toml").exists(), "--keep-dir removed it");
    let _ = std::fs::remove_dir_all(&dir);
}

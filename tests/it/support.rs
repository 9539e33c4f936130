//! Shared test helpers: a dummy credentials file, the daemon binary as a
//! child process (temp dirs and waiting on conditions come from the
//! emulator's testkit, with the other emulator helpers, as `crate::emu`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use gcal_syncd::emulator::testkit::TempDir;

/// Fails the test unless every named tool answers `--version`.
///
/// Tests that need a tool from outside Rust are `#[ignore = "needs ..."]`,
/// so a plain `cargo test` shows them as ignored rather than passed; .ci/run
/// installs the tools and runs them with `--include-ignored`, where a
/// missing tool must fail, never skip.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = Command::new(tool)
            .arg("--version")
            .env_remove("LD_PRELOAD")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "this test needs {tool}; .ci/run installs it");
    }
}

/// A service-account key file that passes the shape checks. The private
/// key is a marker, not a usable key.
pub const DUMMY_PRIVATE_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\\nSECRET-KEY-MATERIAL-42\\n-----END PRIVATE KEY-----\\n";

pub fn dummy_service_account(dir: &TempDir, name: &str) -> PathBuf {
    dir.write(
        name,
        &format!(
            r#"{{"type":"service_account","client_email":"test-sa@project.iam.gserviceaccount.com","private_key_id":"kid1","private_key":"{DUMMY_PRIVATE_KEY}","token_uri":"http://127.0.0.1:9/token"}}"#
        ),
    )
}

/// A valid config for `gcal-syncd run` on ports 0 and a store in `dir`;
/// `extra_account_calendar` is appended to the calendar list (`, "x"`).
pub fn daemon_config(dir: &TempDir, extra_account_calendar: &str) -> String {
    dummy_service_account(dir, "sa.json");
    gcal_syncd::config::ConfigText::new("clinic", "sa.json")
        .log_level("debug")
        .api_token_file("api-token")
        .calendars(&format!("[\"primary\"{extra_account_calendar}]"))
        .render()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gcal-syncd")
}

/// A running `gcal-syncd` child whose stderr (or, for the demo, stdout)
/// lines are collected.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Daemon {
    pub fn spawn(args: &[&str], dir: &Path) -> Daemon {
        Daemon::spawn_with_env(args, dir, &[])
    }

    /// Like [`Daemon::spawn`], with extra environment variables.
    pub fn spawn_with_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start(args, dir, env, false)
    }

    /// Like [`Daemon::spawn`], collecting stdout instead (what `demo`
    /// prints for people); stderr is discarded.
    pub fn spawn_stdout(args: &[&str], dir: &Path) -> Daemon {
        Daemon::start(args, dir, &[], true)
    }

    fn start(args: &[&str], dir: &Path, env: &[(&str, &str)], stdout: bool) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("GCAL_SYNCD_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY");
        cmd.envs(env.iter().copied());
        let (out, err) = if stdout {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn gcal-syncd");
        let stream: Box<dyn std::io::Read + Send> = match child.stdout.take() {
            Some(o) => Box::new(o),
            None => Box::new(child.stderr.take().expect("stderr piped")),
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`; panics with the log so far.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {within:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The first line read so far that contains `needle`.
    pub fn logged(&self, needle: &str) -> Option<&str> {
        self.log
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }

    /// The value of `key=` in a log line.
    pub fn field(line: &str, key: &str) -> String {
        let start = line
            .find(&format!("{key}="))
            .unwrap_or_else(|| panic!("no {key}= in {line}"))
            + key.len()
            + 1;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_matches('"')
            .to_string()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        assert!(status.expect("run kill").success(), "kill -{signal} failed");
    }

    /// Waits for exit; returns the code and the rest of the log.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.log.extend(self.lines.try_iter());
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "gcal-syncd did not exit within {within:?}; log:\n{}",
                    self.log.join("\n")
                );
            }
            // Polling a child's exit status has no event to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain HTTP GET over loopback; returns status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

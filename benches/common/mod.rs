//! Shared by the bench binaries: an emulator, a daemon configured through a
//! real config file, and a feed reader.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use gcal_syncd::config::Config;
use gcal_syncd::daemon::{self, Listeners};
use gcal_syncd::emulator::dates;
use gcal_syncd::emulator::{testkit, Emulator};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub async fn emulator() -> Emulator {
    gcal_syncd::tls::ensure_provider();
    testkit::start_default().await
}

pub fn event(i: usize) -> Value {
    json!({
        "summary": format!("event {i}"),
        "description": "a typical event body with a few fields",
        "location": "Room 4",
        "start": {"dateTime": dates::utc(1 + (i % 28) as i64, (i % 24) as u32, 0)},
        "end": {"dateTime": dates::utc(1 + (i % 28) as i64, (i % 24) as u32, 30)},
    })
}

/// The peak RSS (`VmHWM`) of process `pid`, or of this one, as
/// `/proc` writes it ("123456 kB").
pub fn peak_rss(pid: Option<u32>) -> String {
    let path = pid.map_or("/proc/self/status".to_string(), |p| {
        format!("/proc/{p}/status")
    });
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map_or("? kB".into(), |v| v.trim().to_string())
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gcal-syncd-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes sa.json and config.toml; returns the config path.
pub fn write_config(
    dir: &std::path::Path,
    emu: &Emulator,
    hook: &str,
    api: &str,
    debounce: &str,
) -> PathBuf {
    write_config_with(dir, emu, (hook, api), debounce, "")
}

/// [`write_config`] with `tail` (e.g. `[[sinks]]`) after the account.
pub fn write_config_with(
    dir: &std::path::Path,
    emu: &Emulator,
    (hook, api): (&str, &str),
    debounce: &str,
    tail: &str,
) -> PathBuf {
    std::fs::write(dir.join("sa.json"), emu.service_account_json()).expect("sa");
    let page_size = std::env::var("BENCH_PAGE_SIZE").unwrap_or_else(|_| "2500".into());
    let text = gcal_syncd::config::ConfigText::new("bench", "sa.json")
        .log_level("error")
        .google(&emu.api_root())
        .hook(hook)
        .api(api)
        .sync("page_size", &page_size)
        .sync("poll_interval", "\"1h\"")
        .sync("debounce", &format!("{debounce:?}"))
        .tail(tail)
        .render();
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// A daemon running in this process.
pub struct InProcess {
    pub api: String,
    pub hook: String,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Stops it and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub async fn daemon(dir: &std::path::Path, emu: &Emulator, debounce: &str) -> InProcess {
    daemon_with(dir, emu, debounce, "").await
}

/// [`daemon`] with `tail` (e.g. `[[sinks]]`) in its config file.
pub async fn daemon_with(
    dir: &std::path::Path,
    emu: &Emulator,
    debounce: &str,
    tail: &str,
) -> InProcess {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (h, a) = (
        hook.local_addr().expect("addr").to_string(),
        api.local_addr().expect("addr").to_string(),
    );
    let path = write_config_with(dir, emu, (&h, &a), debounce, tail);
    let cfg = Config::load(&path).expect("config");
    let running = daemon::spawn(cfg, Listeners { hook, api }, "error");
    let stop = running.stop;
    let task = tokio::spawn(async move {
        let _keep = running.control;
        running.task.await.expect("daemon task").expect("daemon");
    });
    InProcess {
        api: a,
        hook: h,
        stop,
        task,
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// The calendar entry of /v1/calendars.
pub async fn calendar(http: &reqwest::Client, api: &str) -> Value {
    match http.get(format!("http://{api}/v1/calendars")).send().await {
        Ok(r) => r.json::<Value>().await.unwrap_or_default()["calendars"][0].clone(),
        Err(_) => Value::Null,
    }
}

/// GET `url` as JSON; panics (the bench is broken) when that fails.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// The release daemon, `gcal-syncd run --config <config>`, stderr
/// discarded; `BENCH_WRAP` names a tool to run it under (heaptrack, perf).
pub fn spawn_daemon(config: &std::path::Path) -> std::process::Child {
    let bin = env!("CARGO_BIN_EXE_gcal-syncd");
    let mut cmd = match std::env::var("BENCH_WRAP") {
        Ok(w) => {
            let mut c = std::process::Command::new(w);
            c.arg(bin);
            c
        }
        Err(_) => std::process::Command::new(bin),
    };
    cmd.args(["run", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the daemon")
}

/// Long-polls until at least `n` records exist after `after`; returns them.
pub async fn wait_records(http: &reqwest::Client, api: &str, after: u64, n: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    let mut cursor = after;
    while got.len() < n {
        let url = format!("http://{api}/v1/changes?after={cursor}&limit=10000&wait=30");
        let body = get_json(http, &url).await;
        let batch = body["changes"].as_array().cloned().unwrap_or_default();
        cursor = body["next"].as_u64().unwrap_or(cursor);
        got.extend(batch);
    }
    got
}

pub async fn wait_channel(http: &reqwest::Client, api: &str) {
    for _ in 0..3000 {
        if calendar(http, api).await["channel"]["confirmed"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no channel");
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A read-only access token for the built-in service account.
pub async fn access_token(emu: &Emulator) -> String {
    testkit::access_token(emu, testkit::READONLY_SCOPE).await
}

/// This process's resident memory now, in KB.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A `/proc/<pid>/status` field (`VmRSS:`, `VmHWM:`) in KB.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of process `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / per_second
}

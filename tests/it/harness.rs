//! The integration harness: the emulator and the daemon on port 0, the
//! daemon configured by a real TOML file and credentials as a user would,
//! running in-process (SIGKILL tests run the binary: see `crash`).

use std::time::Duration;

use gcal_syncd::config::{Config, ConfigText};
use gcal_syncd::daemon::{self, Control, Listeners};
use gcal_syncd::emulator::{Emulator, Options, SERVICE_ACCOUNT};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::emu;
use crate::support::TempDir;

/// The emulator calendar behind the daemon's `primary`.
pub const CAL: &str = SERVICE_ACCOUNT;

/// Knobs of one harness.
pub struct Setup {
    pub page_size: u32,
    pub poll_interval: &'static str,
    pub emulator: Options,
    /// `[channels]` keys and their TOML values.
    pub channels: &'static [(&'static str, &'static str)],
    pub debounce: &'static str,
    /// `sync.retry_base`.
    pub retry_base: &'static str,
    /// Make the calendar one Google does not push for.
    pub pushless: bool,
    /// Top-level tables after `[[accounts]]` (`[feed]`, `[[sinks]]`).
    pub tail: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            page_size: 250,
            poll_interval: "1h",
            emulator: Options {
                allow_http: true,
                ..Default::default()
            },
            channels: &[],
            debounce: "0s",
            retry_base: "50ms",
            pushless: false,
            tail: String::new(),
        }
    }
}

/// The secret in `webhook.secret` beside every harness's configuration,
/// for sinks: the Standard Webhooks specification's example.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running emulator and daemon.
pub struct Harness {
    pub emu: Emulator,
    pub dir: TempDir,
    pub api: String,
    pub hook: String,
    daemon: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    http: reqwest::Client,
    setup: Setup,
    /// What SIGHUP would send to the daemon.
    control: Option<mpsc::Sender<Control>>,
    /// The `calendars` list of the account, as TOML.
    calendars: String,
}

impl Harness {
    pub async fn start(name: &str, setup: Setup) -> Harness {
        let emu = emu::start(setup.emulator.clone()).await;
        let dir = TempDir::new(name);
        dir.write("sa.json", &emu.service_account_json());
        dir.write("webhook.secret", WEBHOOK_SECRET);
        if setup.pushless {
            emu.set_push_supported(CAL, false).expect("pushless");
        }
        let mut h = Harness {
            emu,
            dir,
            api: String::new(),
            hook: String::new(),
            daemon: None,
            http: emu::http(),
            setup,
            control: None,
            calendars: "\"primary\"".into(),
        };
        h.start_daemon().await;
        h
    }

    /// Writes config.toml with the hook's real address as public_url.
    fn write_config(&self, setup: &Setup, hook: &str) {
        let mut text = ConfigText::new("emu", "sa.json")
            .google(&self.emu.api_root())
            .hook(hook)
            .sync("page_size", &setup.page_size.to_string())
            .sync("poll_interval", &format!("{:?}", setup.poll_interval))
            .sync("debounce", &format!("{:?}", setup.debounce))
            .sync("retry_base", &format!("{:?}", setup.retry_base))
            .calendars(&if self.calendars == "all" {
                "\"all\"".to_string()
            } else {
                format!("[{}]", self.calendars)
            })
            .tail(&setup.tail);
        for (k, v) in setup.channels {
            text = text.channels(k, v);
        }
        self.dir.write("config.toml", &text.render());
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Starts the daemon in-process. The hook keeps its port across
    /// restarts (channels outlive the process, as with a real public URL).
    pub async fn start_daemon(&mut self) {
        let hook_addr = if self.hook.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.hook.clone()
        };
        let hook = tokio::net::TcpListener::bind(&hook_addr)
            .await
            .expect("bind hook");
        self.hook = hook.local_addr().expect("addr").to_string();
        self.write_config(&self.setup, &self.hook);
        let cfg = Config::load(&self.config_path()).expect("valid test config");
        let api = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api");
        self.api = api.local_addr().expect("addr").to_string();
        let running = daemon::spawn(cfg, Listeners { hook, api }, "warn");
        self.control = Some(running.control);
        let task = tokio::spawn(async move {
            if let Err(e) = running.task.await.expect("daemon task") {
                panic!("daemon failed: {e}");
            }
        });
        self.daemon = Some((running.stop, task));
        self.wait_healthy().await;
    }

    /// Rewrites config.toml and reloads, as SIGHUP does.
    async fn reload(&self) {
        self.write_config(&self.setup, &self.hook);
        self.control
            .as_ref()
            .expect("daemon running")
            .send(Control::Reload)
            .await
            .expect("reload");
    }

    /// Replaces the tables after the account (`Setup::tail`) and reloads,
    /// as SIGHUP after editing the file does.
    pub async fn set_tail(&mut self, tail: &str) {
        self.setup.tail = tail.to_string();
        self.reload().await;
    }

    /// Follows the account's whole calendar list (`calendars = "all"`).
    pub async fn follow_all(&mut self) {
        self.calendars = "all".into();
        self.reload().await;
    }

    /// Rewrites the account's calendar list and reloads, as SIGHUP does
    /// (when the daemon is stopped, its next start reads the list).
    pub async fn set_calendars(&mut self, ids: &[&str]) {
        self.calendars = ids
            .iter()
            .map(|id| format!("{id:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.daemon.is_some() {
            self.reload().await;
        }
    }

    /// Stops the in-process daemon gracefully and waits for it.
    pub async fn stop_daemon(&mut self) {
        if let Some((stop, task)) = self.daemon.take() {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("daemon stops within 30 s")
                .expect("daemon task");
        }
    }

    async fn wait_healthy(&self) {
        let url = format!("http://{}/healthz", self.api);
        for _ in 0..1000 {
            if self
                .http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("daemon never became healthy");
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("http://{}{path_and_query}", self.api))
            .send()
            .await
            .expect("api call");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Every change after `after`, paging with `limit`.
    pub async fn changes_after(&self, mut after: u64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let (status, body) = self
                .get(&format!("/v1/changes?after={after}&limit=5000"))
                .await;
            assert_eq!(status, 200, "{body}");
            let batch = body["changes"].as_array().cloned().unwrap_or_default();
            if batch.is_empty() {
                return out;
            }
            after = body["next"].as_u64().expect("next");
            out.extend(batch);
        }
    }

    /// Waits (long-polling) until `cond` holds over all changes after `after`.
    pub async fn wait_changes(
        &self,
        what: &str,
        after: u64,
        within: Duration,
        cond: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = self.changes_after(after).await;
            if cond(&all) {
                return all;
            }
            let head = all.last().and_then(|c| c["seq"].as_u64()).unwrap_or(after);
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; have {} changes:\n{}",
                all.len(),
                summary(&all)
            );
            // Long-poll: returns as soon as anything new lands.
            let _ = self.get(&format!("/v1/changes?after={head}&wait=2")).await;
        }
    }

    /// Whether the emulator has an active channel on `resource` (a
    /// calendar id).
    pub fn has_active_channel(&self, resource: &str) -> bool {
        let ch = self.emu.channels();
        ch["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["resource"]["id"] == resource && c["state"] == "active")
    }

    /// `/metrics`, parsed as Prometheus text (OpenMetrics' `# EOF` dropped,
    /// which the classic parser does not know).
    pub async fn scrape(&self) -> prometheus_parse::Scrape {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.api))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let lines = text
            .lines()
            .filter(|l| *l != "# EOF")
            .map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("the scrape parses as Prometheus text")
    }

    /// The calendar's entry in /v1/calendars.
    pub async fn calendar(&self) -> Value {
        let (_, body) = self.get("/v1/calendars").await;
        body["calendars"][0].clone()
    }

    /// Waits until the calendar is idle with a stored sync token (its
    /// current pass, if any, has finished).
    pub async fn wait_idle_with_token(&self, within: Duration) -> Value {
        emu::wait_until_async("the calendar to be synced and idle", within, || async {
            let c = self.calendar().await;
            (c["state"] == "idle" && c["has_sync_token"] == true).then_some(c)
        })
        .await
    }

    /// Waits until `/v1/calendars` shows the calendar in `state`.
    pub async fn wait_state(&self, state: &str, within: Duration) -> Value {
        let what = format!("the calendar to be in state {state}");
        emu::wait_until_async(&what, within, || async {
            let c = self.calendar().await;
            (c["state"] == state).then_some(c)
        })
        .await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.daemon.take() {
            stop.cancel();
        }
    }
}

/// The sum of the samples of `name` whose labels include `labels`.
pub fn metric(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// One line per change: seq change id fields.
pub fn summary(changes: &[Value]) -> String {
    changes
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}",
                c["seq"],
                c["change"].as_str().unwrap_or(""),
                c["event_id"].as_str().unwrap_or(""),
                c["changed_fields"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records of `kind` in `changes`.
pub fn of_kind<'a>(changes: &'a [Value], kind: &str) -> Vec<&'a Value> {
    changes.iter().filter(|c| c["change"] == kind).collect()
}

/// The highest seq in `changes` (0 for none).
pub fn last_seq(changes: &[Value]) -> u64 {
    changes
        .iter()
        .filter_map(|c| c["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

//! `gcal-syncd demo`: the emulator and the daemon in one process, the
//! daemon configured by a real TOML file exactly as a user would write it,
//! and a scripted walk through the changes gcal-syncd must report. Each step
//! prints what it did and the records that arrived, and is checked exactly.
//! Shows only behaviour the daemon has; adds none.

pub mod check;
mod receiver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::{self, Listeners};
use crate::emulator::{dates, Edit, Emulator, Options, SERVICE_ACCOUNT};
use crate::private_dir::{write_file, ScratchDir};
use check::{check, check_final, complete, line, Expect};

const CAL: &str = SERVICE_ACCOUNT;
/// Each step must complete within this.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Runs the demo; returns the process exit code (130 when interrupted).
///
/// Its files (the emulator's key, the config, the store) live in a private
/// directory under the temp dir, removed on exit, Ctrl-C and SIGTERM
/// included, unless `keep_dir`.
pub async fn run(keep_running: bool, keep_dir: bool) -> u8 {
    // Handlers first: a Ctrl-C from now on cleans up instead of killing.
    let mut interrupts = Interrupts::install();
    let mut scratch = match ScratchDir::new("demo") {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "demo: cannot create a directory under {}: {e}",
                std::env::temp_dir().display()
            );
            return 1;
        }
    };
    if keep_dir {
        scratch.keep();
    }
    let mut demo = match Demo::start(scratch.path().to_path_buf()).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("demo: cannot start: {e}");
            return 1;
        }
    };
    let code = tokio::select! {
        code = demo.script() => code,
        _ = interrupts.next() => {
            println!("\n== interrupted");
            130
        }
    };
    if code == 0 && keep_running {
        demo.keep_running();
        interrupts.next().await;
    }
    demo.stop.cancel();
    let _ = (&mut demo.daemon).await;
    if keep_dir {
        println!("   kept {}", scratch.path().display());
    }
    code
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from [`Interrupts::install`] on.
struct Interrupts(Option<(Signal, Signal)>);

impl Interrupts {
    fn install() -> Interrupts {
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Interrupts(Some((int, term))),
            _ => Interrupts(None),
        }
    }

    /// The next SIGINT or SIGTERM (never, where handlers could not be set).
    async fn next(&mut self) {
        match &mut self.0 {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

struct Demo {
    emu: Emulator,
    dir: PathBuf,
    api: String,
    http: reqwest::Client,
    stop: CancellationToken,
    daemon: tokio::task::JoinHandle<()>,
    head: u64,
    /// The application behind the webhook sink; stops with the demo.
    receiver: receiver::Receiver,
    _receiver_stop: tokio_util::sync::DropGuard,
}

impl Demo {
    async fn start(dir: PathBuf) -> Result<Demo, String> {
        crate::tls::ensure_provider();
        let emu = Emulator::start(
            bind().await?,
            Options {
                allow_http: true,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        write_file(
            &dir.join("service-account.json"),
            emu.service_account_json().as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        seed(&emu).await?;
        let secret = receiver::new_secret()?;
        write_file(&dir.join("webhook.secret"), secret.as_bytes()).map_err(|e| e.to_string())?;
        let receiver_stop = CancellationToken::new();
        let receiver = receiver::Receiver::start(bind().await?, &secret, receiver_stop.clone())?;
        let hook = bind().await?;
        let api = bind().await?;
        let (hook_addr, api_addr) = (addr(&hook)?, addr(&api)?);
        let text = config_text(&emu, &hook_addr, &api_addr, &receiver.url);
        let path = dir.join("config.toml");
        write_file(&path, text.as_bytes()).map_err(|e| e.to_string())?;
        println!(
            "== gcal-syncd demo: emulator at {}, store and config in {}",
            emu.url(),
            dir.display()
        );
        println!("-- config.toml (what a user would write; copy it):\n{text}--");
        let cfg = Config::load(&path).map_err(|e| e.to_string())?;
        let running = daemon::spawn(cfg, Listeners { hook, api }, "error");
        let stop = running.stop.clone();
        let daemon = tokio::spawn(async move {
            let _keep = running.control;
            match running.task.await {
                Ok(Err(e)) => eprintln!("demo: the daemon failed: {e}"),
                Err(e) => eprintln!("demo: the daemon task failed: {e}"),
                Ok(Ok(())) => {}
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(70))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Demo {
            emu,
            dir,
            api: api_addr,
            http,
            stop,
            daemon,
            head: 0,
            receiver,
            _receiver_stop: receiver_stop.drop_guard(),
        })
    }

    /// The checked walk; 0 when every expected record arrived and no other.
    async fn script(&mut self) -> u8 {
        let started = Instant::now();
        let all: Vec<String> = self
            .emu
            .etags(CAL)
            .into_iter()
            .filter(|(_, _, c)| !c)
            .map(|(id, _, _)| id)
            .collect();
        let is_series = |id: &String| {
            self.emu
                .event(CAL, id)
                .is_some_and(|e| e.get("recurrence").is_some())
        };
        let series = all
            .iter()
            .find(|id| is_series(id))
            .cloned()
            .unwrap_or_default();
        let ids: Vec<String> = all.iter().filter(|id| !is_series(id)).cloned().collect();
        let mut failures = Vec::new();
        let all_created: Vec<Expect> = all.iter().map(|id| Expect::created(id)).collect();
        self.step(
            &mut failures,
            "initial full sync of the seeded calendar",
            all_created,
            |_| async {},
        )
        .await;
        let channel = self.channel_id().await;
        let e = |i: usize| ids[i % ids.len()].clone();

        self.step(
            &mut failures,
            "summary edit",
            vec![Expect::updated(&e(1), &["summary"])],
            |emu| async move {
                let _ = emu
                    .edit(
                        CAL,
                        Edit::Patch(e(1), json!({"summary": "Team lunch (moved)"})),
                        true,
                    )
                    .await;
            },
        )
        .await;
        self.step(&mut failures, "time change (sequence bump)", vec![Expect::updated(&e(2), &["end", "sequence", "start"])], |emu| async move {
            let _ = emu.edit(CAL, Edit::Patch(e(2), json!({"start": {"dateTime": dates::utc(15, 14, 0)}, "end": {"dateTime": dates::utc(15, 15, 0)}})), true).await;
        }).await;
        self.step(
            &mut failures,
            "description-only edit",
            vec![Expect::updated(&e(3), &["description"])],
            |emu| async move {
                let _ = emu
                    .edit(
                        CAL,
                        Edit::Patch(e(3), json!({"description": "Bring the slides"})),
                        true,
                    )
                    .await;
            },
        )
        .await;
        self.step(
            &mut failures,
            "deletion",
            vec![Expect::deleted(&e(4))],
            |emu| async move {
                let _ = emu.edit(CAL, Edit::Delete(e(4)), true).await;
            },
        )
        .await;
        // The series starts on a winter Monday at 09:00 Berlin (08:00 UTC).
        let instance = format!(
            "{series}{}",
            dates::instance_suffix(dates::winter_monday(), 2, 8)
        );
        let inst = instance.clone();
        self.step(
            &mut failures,
            "one cancelled instance of the recurring series",
            vec![Expect::deleted(&instance)],
            |emu| async move {
                let _ = emu.edit(CAL, Edit::Delete(inst), true).await;
            },
        )
        .await;
        let burst: Vec<String> = ids.iter().skip(5).take(20).cloned().collect();
        self.burst(&mut failures, &burst).await;
        let born = json!({"summary": "Born in the gap", "start": {"dateTime": dates::utc(20, 10, 0)}, "end": {"dateTime": dates::utc(20, 11, 0)}, "id": "borninthegap01"});
        let gap_want = vec![
            Expect::updated(&e(26), &["location"]),
            Expect::deleted(&e(27)),
            Expect::created("borninthegap01"),
        ];
        self.step(
            &mut failures,
            "forced 410: the sync token dies while things change",
            gap_want,
            |emu| async move {
                let _ = emu.invalidate_sync_tokens(CAL);
                let _ = emu
                    .edit(
                        CAL,
                        Edit::Patch(e(26), json!({"location": "Room 12"})),
                        false,
                    )
                    .await;
                let _ = emu.edit(CAL, Edit::Delete(e(27)), false).await;
                let _ = emu.edit(CAL, Edit::Insert(born), true).await;
            },
        )
        .await;
        self.renewal(&mut failures, &channel, &e(28)).await;
        self.webhook(&mut failures).await;
        self.summary(&failures, started);
        if failures.is_empty() {
            0
        } else {
            1
        }
    }

    async fn step<F, Fut>(
        &mut self,
        failures: &mut Vec<String>,
        title: &str,
        want: Vec<Expect>,
        act: F,
    ) where
        F: FnOnce(crate::emulator::Control) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.run_step(failures, title, want, act, true).await
    }

    async fn run_step<F, Fut>(
        &mut self,
        failures: &mut Vec<String>,
        title: &str,
        want: Vec<Expect>,
        act: F,
        verbose: bool,
    ) where
        F: FnOnce(crate::emulator::Control) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        println!("\n== {title}");
        act((*self.emu).clone()).await;
        let deadline = Instant::now() + STEP_LIMIT;
        let mut got: Vec<Value> = Vec::new();
        while !complete(&want, &got) && Instant::now() < deadline {
            got.extend(self.poll(self.last(&got), 5).await);
        }
        // Anything more that lands at once would be an extra record.
        got.extend(self.poll(self.last(&got), 0).await);
        if verbose || got.len() <= 10 {
            got.iter().for_each(|r| println!("   {}", line(r)));
        } else {
            got.iter().take(3).for_each(|r| println!("   {}", line(r)));
            println!("   ... {} more ...", got.len() - 4);
            got.last().iter().for_each(|r| println!("   {}", line(r)));
        }
        match check(&want, &got) {
            Ok(()) => println!("   ok: {} record(s), as expected", got.len()),
            Err(problems) => {
                for p in &problems {
                    println!("   FAIL {p}");
                }
                failures.extend(problems.into_iter().map(|p| format!("{title}: {p}")));
            }
        }
        self.head = self.last(&got);
    }

    /// 200 edits (ten on each of 20 events), each with its own ping. Edits
    /// that land between two syncs are one change to Google, so each event
    /// must end at its final version, with nothing repeated.
    async fn burst(&mut self, failures: &mut Vec<String>, events: &[String]) {
        let title = "a burst of 200 edits (10 on each of 20 events), each with its own ping";
        println!("\n== {title}");
        for i in 0..200 {
            let _ = self
                .emu
                .edit(
                    CAL,
                    Edit::Patch(
                        events[i % events.len()].clone(),
                        json!({"summary": format!("burst edit {i}")}),
                    ),
                    true,
                )
                .await;
        }
        let finals: Vec<(String, String)> = events
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    self.emu
                        .event(CAL, id)
                        .and_then(|e| e["etag"].as_str().map(String::from))
                        .unwrap_or_default(),
                )
            })
            .collect();
        let deadline = Instant::now() + STEP_LIMIT;
        let mut got: Vec<Value> = Vec::new();
        while check_final(&finals, &got).is_err_and(|p| p.iter().any(|x| x.starts_with("missing")))
            && Instant::now() < deadline
        {
            got.extend(self.poll(self.last(&got), 5).await);
        }
        got.extend(self.poll(self.last(&got), 0).await);
        got.iter().take(3).for_each(|r| println!("   {}", line(r)));
        if got.len() > 3 {
            println!("   ... {} more", got.len() - 3);
        }
        match check_final(&finals, &got) {
            Ok(()) => println!("   ok: {} record(s) for 200 edits; every event at its final version, none repeated", got.len()),
            Err(problems) => {
                problems.iter().for_each(|p| println!("   FAIL {p}"));
                failures.extend(problems.into_iter().map(|p| format!("{title}: {p}")));
            }
        }
        self.head = self.last(&got);
    }

    fn last(&self, got: &[Value]) -> u64 {
        got.iter()
            .filter_map(|r| r["seq"].as_u64())
            .max()
            .unwrap_or(self.head)
    }

    /// Records after `after`, long-polling up to `wait` seconds.
    async fn poll(&self, after: u64, wait: u64) -> Vec<Value> {
        let url = format!(
            "http://{}/v1/changes?after={after}&wait={wait}&limit=10000",
            self.api
        );
        match self.http.get(url).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|b| b["changes"].as_array().cloned())
                .unwrap_or_default(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Vec::new()
            }
        }
    }

    async fn calendars(&self) -> Value {
        let url = format!("http://{}/v1/calendars", self.api);
        match self.http.get(url).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or_default()["calendars"][0].clone(),
            Err(_) => Value::Null,
        }
    }

    async fn channel_id(&self) -> String {
        let deadline = Instant::now() + STEP_LIMIT;
        while Instant::now() < deadline {
            if let Some(id) = self.calendars().await["channel"]["id"].as_str() {
                return id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        String::new()
    }

    /// The channel (ttl 30 s, renewed 20 s before expiry) is replaced; an
    /// edit then arrives through the new one.
    async fn renewal(&mut self, failures: &mut Vec<String>, first: &str, id: &str) {
        println!("\n== channel renewal (ttl 30s, renew_before 20s, checked every second)");
        let deadline = Instant::now() + STEP_LIMIT;
        let mut current = first.to_string();
        while current == first && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            current = self.calendars().await["channel"]["id"]
                .as_str()
                .unwrap_or(first)
                .to_string();
        }
        if current == first {
            println!("   FAIL the channel {first} was not renewed");
            failures.push("channel renewal: not renewed".into());
            return;
        }
        let stopped = self.emu.channels()["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["id"] == first && c["state"] == "stopped");
        println!("   channel {first} -> {current} (old one stopped: {stopped})");
        let id = id.to_string();
        let i2 = id.clone();
        self.step(
            failures,
            "an edit after the renewal",
            vec![Expect::updated(&id, &["summary"])],
            |emu| async move {
                let _ = emu
                    .edit(
                        CAL,
                        Edit::Patch(i2, json!({"summary": "after renewal"})),
                        true,
                    )
                    .await;
            },
        )
        .await;
    }

    /// The webhook sink's receiver must hold every record of the walk, in
    /// seq order, each batch's signature verified.
    async fn webhook(&self, failures: &mut Vec<String>) {
        println!("\n== the webhook sink (a receiver that verifies Standard Webhooks signatures)");
        let want: Vec<u64> = (1..=self.head).collect();
        let deadline = Instant::now() + STEP_LIMIT;
        let got = loop {
            let got = self.receiver.received();
            if got.seqs.len() >= want.len() || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "   {} signed POSTs verified, {} refused; {} changes received, seqs {}..{}",
            got.verified,
            got.refused,
            got.seqs.len(),
            got.seqs.first().copied().unwrap_or(0),
            got.seqs.last().copied().unwrap_or(0)
        );
        if got.seqs == want && got.refused == 0 {
            println!("   every change pushed once, in order, signed: OK");
        } else {
            failures.push(format!(
                "webhook sink: wanted seqs 1..={} in order with every signature valid; got {} changes, {} refused",
                self.head,
                got.seqs.len(),
                got.refused
            ));
        }
    }

    fn summary(&self, failures: &[String], started: Instant) {
        let c = self.emu.counters();
        let pings = c.pings_sent.get("exists").copied().unwrap_or(0);
        let calls = c.list_calls_by_calendar.get(CAL).copied().unwrap_or(0);
        let size = self.emu.etags(CAL).len() as u64;
        println!("\n== summary ({:.1} s)", started.elapsed().as_secs_f64());
        println!(
            "   pings received:                 {pings} (+{} channel sync messages)",
            c.pings_sent.get("sync").copied().unwrap_or(0)
        );
        println!(
            "   events.list calls (gcal-syncd): {calls}, {} items",
            c.list_items
        );
        println!("   change records emitted:         {}", self.head);
        println!(
            "   the naive method (list every event on every ping): {pings} calls, about {} items",
            pings * size
        );
        if failures.is_empty() {
            println!("   every expected record arrived, none extra: OK");
        } else {
            println!("   FAILED: {} problem(s):", failures.len());
            failures.iter().for_each(|f| println!("   - {f}"));
        }
    }

    /// Hints for trying the daemon by hand.
    fn keep_running(&self) {
        let emu = self.emu.url();
        let me = std::env::current_exe()
            .map_or_else(|_| "gcal-syncd".to_string(), |p| p.display().to_string());
        println!("\n== still running (Ctrl-C to stop). Try:");
        println!(
            "   curl -s 'http://{}/v1/changes?after={}&wait=30' | jq .",
            self.api, self.head
        );
        println!("   curl -s http://{}/v1/calendars | jq .", self.api);
        println!("   curl -s {emu}/emulator/v1/calendars/primary/events | jq '.items[].id'");
        println!("   curl -s -X PATCH -H 'Content-Type: application/json' -d '{{\"summary\":\"by hand\"}}' {emu}/emulator/v1/calendars/primary/events/EVENT_ID");
        println!("   curl -s -X POST -H 'Content-Type: application/json' -d '{{\"summary\":\"new\",\"start\":{{\"dateTime\":\"{}\"}},\"end\":{{\"dateTime\":\"{}\"}}}}' {emu}/emulator/v1/calendars/primary/events", dates::utc(1, 10, 0), dates::utc(1, 11, 0));
        println!(
            "   {me} status --config {}",
            self.dir.join("config.toml").display()
        );
        println!("   The README's consumer loop, saved as feed-loop.sh:");
        println!(
            "   API=http://{} CURSOR=./gcal-cursor sh feed-loop.sh",
            self.api
        );
    }
}

async fn bind() -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind a loopback port: {e}"))
}

fn addr(l: &tokio::net::TcpListener) -> Result<String, String> {
    l.local_addr()
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

fn config_text(emu: &Emulator, hook: &str, api: &str, webhook: &str) -> String {
    crate::config::ConfigText::new("demo", "service-account.json")
        .google(&emu.api_root())
        .hook(hook)
        .api(api)
        .channels("ttl", "\"30s\"")
        .channels("renew_before", "\"20s\"")
        .channels("check_schedule", "\"* * * * * *\"")
        .sync("poll_interval", "\"15m\"")
        .sync("debounce", "\"300ms\"")
        .tail(&format!(
            "[[sinks]]\nname = \"demo-app\"\ntype = \"webhook\"\nurl = \"{webhook}\"\nsecret_file = \"webhook.secret\"\n"
        ))
        .render()
}

/// A few dozen events and one daily series.
async fn seed(emu: &Emulator) -> Result<(), String> {
    let names = [
        "Standup",
        "Team lunch",
        "1:1 with Sam",
        "Design review",
        "Dentist",
        "Board meeting",
    ];
    for i in 0..30 {
        let day = i64::from(1 + i % 28);
        let body = json!({
            "summary": format!("{} #{i}", names[i as usize % names.len()]),
            "start": {"dateTime": dates::utc(day, 8 + i % 9, 0)},
            "end": {"dateTime": dates::utc(day, 8 + i % 9, 30)},
        });
        emu.edit(CAL, Edit::Insert(body), false)
            .await
            .map_err(|e| e.message)?;
    }
    let monday = dates::winter_monday();
    let series = json!({
        "summary": "Daily check-in", "recurrence": ["RRULE:FREQ=DAILY;COUNT=10"],
        "start": {"dateTime": dates::at(monday, 9, 0), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": dates::at(monday, 9, 15), "timeZone": "Europe/Berlin"},
    });
    emu.edit(CAL, Edit::Insert(series), false)
        .await
        .map_err(|e| e.message)?;
    Ok(())
}

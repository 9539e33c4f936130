//! `[[sinks]]` of type nats, against a real `nats-server -js`: every change
//! is stored in the JetStream stream exactly once, also when the daemon
//! dies after JetStream acknowledged a batch but before the cursor moved
//! (the `Nats-Msg-Id` duplicate window drops the batch sent again), on the
//! documented subject, and a consumer reads them in seq order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::Value;

use crate::crash::calendar_of;
use crate::emu;
use crate::harness::CAL;
use crate::support::{Daemon, TempDir};

const WAIT: Duration = Duration::from_secs(90);
const EVENTS: u64 = 250;

/// A `nats-server -js` on a free loopback port, stopped on drop.
struct NatsServer {
    child: Child,
    url: String,
}

impl NatsServer {
    fn start(dir: &TempDir) -> NatsServer {
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server (.ci/run installs it)");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let url = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("nats-server said where it listens");
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                break format!("nats://{}", addr.trim());
            }
        };
        NatsServer { child, url }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nats-server (Debian package nats-server); .ci/run installs it"]
async fn every_change_lands_in_jetstream_once_across_a_crash_after_the_ack() {
    crate::support::require_tools(&["nats-server"]);
    let (emu, dir) = calendar_of(EVENTS as usize, "sink-nats").await;
    let nats = NatsServer::start(&dir);
    let client = async_nats::connect(nats.url.as_str())
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let mut stream = js
        .create_stream(jetstream::stream::Config {
            name: "GCAL".into(),
            subjects: vec!["gcal.>".into()],
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .expect("create the stream");
    // The calendar by its real id, which holds '.' and '@'.
    let config = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    let config = config.replace("[\"primary\"]", &format!("[{CAL:?}]"));
    assert!(config.contains(CAL), "{config}");
    dir.write(
        "config.toml",
        &format!(
            "{config}\n[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nstream = \"GCAL\"\nsubject_prefix = \"gcal\"\nbatch_max = 50\n",
            nats.url
        ),
    );

    // Dies right after JetStream acknowledged the second batch.
    let mut daemon = Daemon::spawn_with_env(
        &["run", "--config", "config.toml"],
        dir.path(),
        &[("GCAL_SYNCD_FAILPOINT", "abort_after_sink_ack:2")],
    );
    daemon.wait_for_line("failpoint: aborting at abort_after_sink_ack", WAIT);
    let _ = daemon.wait_exit(WAIT);
    assert_eq!(stream.info().await.expect("info").state.messages, 100);

    let (mut daemon, api) = crate::crash::start(&dir);
    let sink = emu::wait_until("every record published", WAIT, || {
        let (_, body) = crate::support::http_get(&api, "/v1/sinks");
        let body: Value = serde_json::from_str(&body).ok()?;
        (body["sinks"][0]["cursor"] == EVENTS).then_some(body)
    })
    .await;
    let store_id = sink["store_id"].as_str().expect("store id").to_string();
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        EVENTS,
        "a record stored twice (or lost)"
    );

    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(EVENTS as usize)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("fetch");
    let subject = format!("gcal.emu.{}", CAL.replace('.', "%2E"));
    let mut seqs = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        assert_eq!(message.subject.as_str(), subject);
        let record: Value = serde_json::from_slice(&message.payload).expect("a record");
        let seq = record["seq"].as_u64().expect("seq");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string());
        assert_eq!(id, Some(format!("{store_id}-{seq}")));
        seqs.push(seq);
    }
    assert_eq!(seqs, (1..=EVENTS).collect::<Vec<_>>());
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(WAIT), Some(0));
    drop(emu);
}

//! The composition root: opens the store, runs the listeners, reacts to
//! reload and stop requests, and drains. Owns no sync, renewal or routing
//! logic itself.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{Calendars, Starter, StarterDeps};
use crate::api::Api;
use crate::channels::{ChannelIndex, ChannelMsg, ChannelsHandle, Scheduler};
use crate::config::Config;
use crate::feed::{Feed, Retention};
use crate::hook::Hook;
use crate::http::{self, DRAIN_LIMIT};
use crate::logging::LogHandle;
use crate::metrics::Metrics;
use crate::notify;
use crate::store::{Store, StoreError};
use crate::supervisor::{Reload, Supervisor};
use crate::sync::StatusBoard;
use crate::tasks::Tasks;

/// Why the daemon could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {key} {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the {0} task stopped unexpectedly (see the error above); exiting so that systemd restarts the daemon")]
    TaskDied(String),
}

/// The two sockets the daemon serves, bound before it starts (tests bind
/// port 0 and read the addresses back).
pub struct Listeners {
    pub hook: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    /// Binds `hook.listen` and `api.listen`.
    pub async fn bind(cfg: &Config) -> Result<Listeners, DaemonError> {
        let bind = |key, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Bind { key, addr, source })
        };
        Ok(Listeners {
            hook: bind("hook.listen", cfg.hook.listen).await?,
            api: bind("api.listen", cfg.api.listen).await?,
        })
    }
}

/// Requests from outside the daemon (signals, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration file and apply it.
    Reload,
}

/// The daemon as a task of this process: `gcal-syncd demo`, the tests and
/// the benches start it this way.
pub struct InProcess {
    /// Stops it (it then drains, like on SIGTERM).
    pub stop: CancellationToken,
    /// What SIGHUP sends.
    pub control: mpsc::Sender<Control>,
    pub task: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

/// Spawns [`run`] on `listeners` with logging at `log_level`.
pub fn spawn(config: Config, listeners: Listeners, log_level: &str) -> InProcess {
    let stop = CancellationToken::new();
    let (control, rx) = mpsc::channel::<Control>(1);
    let log = crate::logging::init(log_level);
    let task = tokio::spawn(run(config, listeners, rx, stop.clone(), log));
    InProcess {
        stop,
        control,
        task,
    }
}

/// Runs the daemon until `stop` fires, then drains and flushes the store.
pub async fn run(
    config: Config,
    listeners: Listeners,
    mut control: mpsc::Receiver<Control>,
    stop: CancellationToken,
    log: LogHandle,
) -> Result<(), DaemonError> {
    let store_path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await
        .map_err(|e| StoreError::Backend(format!("store open task failed: {e}")))??;
    let hook_addr = listeners.hook.local_addr().ok();
    let api_addr = listeners.api.local_addr().ok();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.path.display(),
        hook = %fmt_addr(hook_addr),
        api = %fmt_addr(api_addr),
        store = %store.path().display(),
        "gcal-syncd started"
    );
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let tracker = TaskTracker::new();
    let (tasks, mut deaths) = Tasks::new(tracker.clone());
    let metrics = Metrics::new();
    // Retention holds what every configured sink has not passed from the
    // first prune on; the sinks' manager keeps this current.
    let (configured_sinks, sink_names) =
        tokio::sync::watch::channel(config.sinks.iter().map(|s| s.name.clone()).collect());
    let retention = Retention {
        keep: config.feed.retention,
        sinks: sink_names,
    };
    let feed = Feed::start(
        store.clone(),
        retention,
        stop.clone(),
        &tasks,
        metrics.clone(),
    )?;
    let sinks = crate::sinks::start(
        &config.sinks,
        (&store, &feed),
        configured_sinks,
        &tasks,
        (&metrics, &stop),
    );
    let board = StatusBoard::default();
    let starter = Starter::new(
        &config,
        StarterDeps {
            store: store.clone(),
            feed: feed.clone(),
            board: board.clone(),
            tasks: tasks.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
        },
    );
    let first = starter.apply(&config, None).await;
    let calendars = starter.calendars.clone();
    tracing::info!(
        calendars = calendars.len(),
        feed_head = feed.head().get(),
        "sync engines started"
    );
    let api = Api::new(
        store.clone(),
        feed,
        board.clone(),
        calendars.clone(),
        config.api.token.clone(),
        stop.clone(),
        metrics.clone(),
    )
    .with_sinks(sinks.clone());
    let (hook, channel_tx, index) =
        spawn_channels(&config, &store, calendars.clone(), &metrics, &tasks, &stop);
    let sources = crate::progress::Sources {
        board: board.clone(),
        index,
        calendars,
        store: store.clone(),
    };
    tasks.spawn(
        "start-up progress",
        &stop,
        crate::progress::run(sources, stop.clone()),
    );
    let config = Arc::new(config);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let supervisor = Supervisor {
        starter,
        channels: channel_tx,
        config: config.clone(),
        unsettled: first.unsettled,
        failed_reads: 0,
    };
    tasks.spawn(
        "accounts supervisor",
        &stop,
        supervisor.run(reload_rx, stop.clone()),
    );
    spawn_servers(&tasks, listeners, hook, api, &stop);
    tasks.spawn("watchdog", &stop, notify::watchdog(stop.clone()));
    notify::ready(&format!(
        "serving hook={} api={}",
        fmt_addr(hook_addr),
        fmt_addr(api_addr)
    ));

    let mut running = config;
    let mut died = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            name = deaths.next() => {
                died = Some(name);
                break;
            }
            msg = control.recv() => match msg {
                Some(Control::Reload) => {
                    if let Some(new) = reload(&running, &log, &reload_tx).await {
                        sinks.reload(new.sinks.clone()).await;
                        running = new;
                    }
                }
                None => break,
            },
        }
    }

    drain(&stop, &tracker).await;
    store.flush().await?;
    if let Some(task) = died {
        return Err(DaemonError::TaskDied(task));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Stops every task and waits for them, at most [`DRAIN_LIMIT`].
async fn drain(stop: &CancellationToken, tracker: &TaskTracker) {
    tracing::info!(drain_limit = ?DRAIN_LIMIT, "stopping");
    notify::stopping();
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_LIMIT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after the drain limit; stopping anyway");
    }
}

/// The channel scheduler (spawned) and the hook that feeds its index;
/// returns the hook and the scheduler's inbox.
fn spawn_channels(
    config: &Config,
    store: &Store,
    calendars: Calendars,
    metrics: &Metrics,
    tasks: &Tasks,
    stop: &CancellationToken,
) -> (Hook, mpsc::Sender<ChannelMsg>, ChannelIndex) {
    let index = ChannelIndex::default();
    let (channel_tx, channel_rx) = mpsc::channel(1024);
    let (confirmed_tx, confirmations) = mpsc::unbounded_channel();
    let hook = Hook::new(
        config.hook.public_url.path(),
        config.hook.max_body_bytes,
        index.clone(),
        calendars.clone(),
        ChannelsHandle::new(channel_tx.clone(), confirmed_tx),
        metrics.clone(),
    );
    let scheduler = Scheduler {
        store: store.clone(),
        index: index.clone(),
        calendars,
        address: config.hook.public_url.to_string(),
        renewal: crate::channels::Renewal {
            ttl: config.channels.ttl,
            renew_before: config.channels.renew_before,
        },
        schedule: config.channels.check_schedule.clone(),
        rx: channel_rx,
        confirmations,
        tx: channel_tx.clone(),
        stop: stop.clone(),
        metrics: metrics.clone(),
    };
    tasks.spawn("channel scheduler", stop, scheduler.run());
    (hook, channel_tx, index)
}

fn spawn_servers(
    tasks: &Tasks,
    listeners: Listeners,
    hook: Hook,
    api: Api,
    stop: &CancellationToken,
) {
    let hook_handler = move |req| {
        let hook = hook.clone();
        async move { hook.handle(req).await }
    };
    tasks.spawn(
        "hook listener",
        stop,
        http::serve(
            "hook",
            listeners.hook,
            http::Limits::HOOK,
            hook_handler,
            stop.clone(),
        ),
    );
    let api_handler = move |req| {
        let api = api.clone();
        async move { api.handle(req).await }
    };
    tasks.spawn(
        "api listener",
        stop,
        http::serve(
            "api",
            listeners.api,
            http::Limits::API,
            api_handler,
            stop.clone(),
        ),
    );
}

/// Re-reads the configuration file and applies it: calendars added get an
/// engine (then a channel and a full sync), removed ones are stopped, their
/// channels stopped and, unless the account says `keep`, a final `deleted`
/// record is written for each of their events. A bad file is logged and the
/// running configuration kept.
/// Re-reads the configuration file; a valid one goes to the supervisor
/// (which says when it is applied), a bad one is logged and the running
/// configuration kept.
async fn reload(
    current: &Arc<Config>,
    log: &LogHandle,
    supervisor: &mpsc::Sender<Reload>,
) -> Option<Arc<Config>> {
    notify::reloading();
    let path = current.path.clone();
    let applied = match Config::load(&path) {
        Ok(new) => {
            for key in current.restart_only_changes(&new) {
                tracing::warn!(
                    key,
                    "changed in the configuration file; restart gcal-syncd to apply it"
                );
            }
            log.set_level(&new.log_level);
            let new = Arc::new(new);
            let (done, applied) = oneshot::channel();
            match supervisor.send((new.clone(), done)).await {
                Ok(()) => applied.await.ok().map(|()| new),
                Err(_) => None, // stopping
            }
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "invalid configuration");
            }
            tracing::error!(config = %path.display(), errors = errors.0.len(), "reload rejected; keeping the running configuration");
            None
        }
    };
    notify::ready("configuration reloaded");
    applied
}

fn fmt_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "?".into(), |a| a.to_string())
}

/// Turns SIGTERM/SIGINT into `stop` and SIGHUP into [`Control::Reload`].
/// A second SIGTERM or SIGINT while draining exits at once.
pub async fn forward_signals(
    stop: CancellationToken,
    control: mpsc::Sender<Control>,
) -> Result<(), DaemonError> {
    let mut signals =
        signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;
    while let Some(signal) = signals.next().await {
        match signal {
            SIGHUP => {
                tracing::info!("SIGHUP: reloading the configuration");
                if control.send(Control::Reload).await.is_err() {
                    return Ok(());
                }
            }
            _ if stop.is_cancelled() => {
                tracing::warn!("second stop signal: exiting without draining");
                std::process::exit(1);
            }
            _ => {
                tracing::info!(signal = signal_name(signal), "stop requested");
                stop.cancel();
            }
        }
    }
    Ok(())
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "other",
    }
}

//! The composition root: opens the store, runs the listeners, reacts to
//! reload and stop requests, and drains. Owns no sync, renewal or routing
//! logic itself.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Starter;
use crate::api::Api;
use crate::channels::{ChannelIndex, ChannelMsg, ChannelsHandle, Scheduler};
use crate::config::{Config, OnCalendarRemoved};
use crate::feed::{Feed, Retention};
use crate::hook::Hook;
use crate::http::{self, DRAIN_LIMIT};
use crate::logging::LogHandle;
use crate::metrics::Metrics;
use crate::notify;
use crate::store::{Store, StoreError};
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
    let retention = Retention {
        keep: config.feed.retention,
        sinks: config.sinks.iter().map(|s| s.name.clone()).collect(),
    };
    let feed = Feed::start(
        store.clone(),
        retention,
        stop.clone(),
        &tasks,
        metrics.clone(),
    )?;
    let board = StatusBoard::default();
    let starter = Starter::new(
        &config,
        store.clone(),
        feed.clone(),
        board.clone(),
        tasks.clone(),
        stop.clone(),
        metrics.clone(),
    );
    starter.apply(&config, None).await;
    let calendars = starter.calendars.clone();
    tracing::info!(
        calendars = calendars.len(),
        feed_head = feed.head(),
        "sync engines started"
    );
    let api = Api::new(
        store.clone(),
        feed,
        board,
        calendars.clone(),
        config.api.token.clone(),
        stop.clone(),
        metrics.clone(),
    );
    let index = ChannelIndex::default();
    let (channel_tx, channel_rx) = mpsc::channel(1024);
    let hook = Hook::new(
        config.hook.public_url.path(),
        config.hook.max_body_bytes,
        index.clone(),
        calendars.clone(),
        ChannelsHandle::new(channel_tx.clone()),
        metrics.clone(),
    );
    let scheduler = Scheduler {
        store: store.clone(),
        index,
        calendars,
        address: config.hook.public_url.to_string(),
        ttl: config.channels.ttl,
        renew_before: config.channels.renew_before,
        schedule: config.channels.check_schedule.clone(),
        rx: channel_rx,
        tx: channel_tx.clone(),
        stop: stop.clone(),
        metrics,
    };
    tasks.spawn("channel scheduler", &stop, scheduler.run());
    let (config_tx, _config_rx) = watch::channel(Arc::new(config));
    spawn_servers(&tasks, listeners, hook, api, &stop);
    tasks.spawn("watchdog", &stop, notify::watchdog(stop.clone()));
    notify::ready(&format!(
        "serving hook={} api={}",
        fmt_addr(hook_addr),
        fmt_addr(api_addr)
    ));

    let mut died = None;
    let list_trigger = starter.calendars.list_trigger();
    let mut next_list_refresh =
        list_refresh(&config_tx.borrow()).map(|d| tokio::time::Instant::now() + d);
    loop {
        // A followed calendar list is re-read when its channel pings, and on
        // the poll interval in case a ping was dropped.
        let refresh = async {
            let timer = async {
                match next_list_refresh {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = list_trigger.notified() => {}
                _ = timer => {}
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            name = deaths.next() => {
                died = Some(name);
                break;
            }
            msg = control.recv() => match msg {
                Some(Control::Reload) => reload(&config_tx, &log, &starter, &channel_tx).await,
                None => break,
            },
            _ = refresh => {
                let cfg = config_tx.borrow().clone();
                let applied = apply(&starter, &cfg, &cfg, &channel_tx).await;
                if !applied.added.is_empty() || !applied.removed.is_empty() {
                    tracing::info!(added = applied.added.len(), removed = applied.removed.len(), "calendar list changed");
                }
            }
        }
        next_list_refresh =
            list_refresh(&config_tx.borrow()).map(|d| tokio::time::Instant::now() + d);
    }

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
    store.flush().await?;
    if let Some(task) = died {
        return Err(DaemonError::TaskDied(task));
    }
    tracing::info!("stopped");
    Ok(())
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
async fn reload(
    current: &watch::Sender<Arc<Config>>,
    log: &LogHandle,
    starter: &Starter,
    channels: &mpsc::Sender<ChannelMsg>,
) {
    notify::reloading();
    let path = current.borrow().path.clone();
    match Config::load(&path) {
        Ok(new) => {
            let old = current.borrow().clone();
            for key in restart_only_changes(&old, &new) {
                tracing::warn!(
                    key,
                    "changed in the configuration file; restart gcal-syncd to apply it"
                );
            }
            log.set_level(&new.log_level);
            let applied = apply(starter, &new, &old, channels).await;
            tracing::info!(config = %path.display(), accounts = new.accounts.len(), added = applied.added.len(), removed = applied.removed.len(), "configuration reloaded");
            current.send_replace(Arc::new(new));
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "invalid configuration");
            }
            tracing::error!(config = %path.display(), errors = errors.0.len(), "reload rejected; keeping the running configuration");
        }
    }
    notify::ready("configuration reloaded");
}

/// Makes the running calendars those of `new` and acts on the difference:
/// removed calendars get their channels stopped and (unless `keep`) final
/// deleted records; added ones get a channel (and so a full sync).
async fn apply(
    starter: &Starter,
    new: &Config,
    old: &Config,
    channels: &mpsc::Sender<ChannelMsg>,
) -> crate::accounts::Applied {
    let applied = starter.apply(new, Some(old)).await;
    for (key, policy) in &applied.removed {
        if *policy == OnCalendarRemoved::EmitDeletes {
            match crate::sync::purge_calendar(&starter.store, &starter.feed, key).await {
                Ok(n) => {
                    tracing::info!(account = %key.account, calendar = %key.calendar_id, records = n, "final deleted records written")
                }
                Err(e) => {
                    tracing::error!(account = %key.account, calendar = %key.calendar_id, error = %e, "cannot write the final deleted records")
                }
            }
        }
    }
    if !applied.removed.is_empty() {
        let _ = channels.try_send(ChannelMsg::Removed);
    }
    if !applied.added.is_empty() {
        let _ = channels.try_send(ChannelMsg::Check);
    }
    applied
}

/// Accounts with `calendars = "all"` have their calendar list read again
/// this often (jittered), so calendars that appear or disappear are
/// followed without a reload. None when no account follows its list.
fn list_refresh(cfg: &Config) -> Option<std::time::Duration> {
    cfg.accounts
        .iter()
        .any(|a| a.calendars == crate::config::CalendarSelection::All)
        .then(|| crate::sync::jitter(cfg.sync.poll_interval, 0.25))
}

/// Keys whose new value only takes effect after a restart.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.hook.listen != new.hook.listen {
        out.push("hook.listen");
    }
    if old.api.listen != new.api.listen {
        out.push("api.listen");
    }
    if old.store.path != new.store.path {
        out.push("store.path");
    }
    if old.api.token != new.api.token {
        out.push("api.token_file");
    }
    if old.hook.public_url != new.hook.public_url
        || old.hook.max_body_bytes != new.hook.max_body_bytes
    {
        out.push("hook.public_url/max_body_bytes");
    }
    if old.channels.check_schedule != new.channels.check_schedule
        || old.channels.ttl != new.channels.ttl
        || old.channels.renew_before != new.channels.renew_before
    {
        out.push("channels");
    }
    let sinks = |c: &Config| c.sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if old.feed.retention != new.feed.retention || sinks(old) != sinks(new) {
        out.push("feed.retention/sinks");
    }
    if old.sync.poll_interval != new.sync.poll_interval
        || old.sync.debounce != new.sync.debounce
        || old.sync.page_size != new.sync.page_size
    {
        out.push("sync (for calendars already running)");
    }
    out
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

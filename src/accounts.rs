//! The running calendars and the code that starts and stops them. One Google
//! client per account (authenticator + rate limiter), one engine per
//! calendar, as a watched task ([`Tasks`]). [`Calendars`] is the registry the
//! hook, the API and the channel scheduler read; only [`Starter`] (driven by
//! the daemon at start and on SIGHUP) changes it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::tasks::Tasks;
use tokio_util::sync::CancellationToken;

use crate::config::{Account, CalendarSelection, Config, OnCalendarRemoved};
use crate::feed::Feed;
use crate::google::{Authenticator, GoogleClient, SCOPE_READONLY, SCOPE_READWRITE};
use crate::metrics::Metrics;
use crate::store::{CalendarKey, Store};
use crate::sync::{Engine, EngineDeps, StatusBoard, SyncSettings, Trigger};

#[derive(Default)]
struct Inner {
    /// The running engines, one per followed calendar.
    engines: BTreeMap<CalendarKey, Running>,
    clients: BTreeMap<String, Arc<GoogleClient>>,
    /// Accounts with `calendars = "all"`: their calendar list is watched.
    followers: std::collections::BTreeSet<String>,
}

/// One running engine: how to wake it, and how to stop it and wait for it.
struct Running {
    trigger: Trigger,
    /// A child of the daemon's stop token.
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What a watch channel watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// One calendar's events (`events.watch`).
    Events(CalendarKey),
    /// An account's calendar list (`calendarList.watch`), for
    /// `calendars = "all"`.
    CalendarList { account: String },
}

/// The calendar id under which a calendar list's channel is stored (no
/// real calendar id starts with `#`). Only [`Watched`] reads or writes it.
const CALENDAR_LIST: &str = "#calendarList";

impl Watched {
    /// How channel records (and status) name it.
    pub fn key(&self) -> CalendarKey {
        match self {
            Watched::Events(key) => key.clone(),
            Watched::CalendarList { account } => CalendarKey::new(account, CALENDAR_LIST),
        }
    }

    /// What a stored channel record's key watches.
    pub fn of(key: &CalendarKey) -> Watched {
        if key.calendar_id == CALENDAR_LIST {
            Watched::CalendarList {
                account: key.account.clone(),
            }
        } else {
            Watched::Events(key.clone())
        }
    }
}

/// The running calendars. Cheap to clone; reads never wait on Google.
#[derive(Clone, Default)]
pub struct Calendars(Arc<RwLock<Inner>>, Trigger);

impl Calendars {
    /// What to poke when `watched` changed, while it is still followed.
    pub fn trigger(&self, watched: &Watched) -> Option<Trigger> {
        match watched {
            Watched::CalendarList { account } => self.follows(account).then(|| self.1.clone()),
            Watched::Events(key) => self
                .0
                .read()
                .ok()?
                .engines
                .get(key)
                .map(|r| r.trigger.clone()),
        }
    }

    /// Poked when a followed calendar list changes (its channel pinged).
    pub fn list_trigger(&self) -> Trigger {
        self.1.clone()
    }

    fn follows(&self, account: &str) -> bool {
        self.0.read().is_ok_and(|i| i.followers.contains(account))
    }

    /// Everything that should have a channel: the calendars, and the
    /// calendar lists of the accounts that follow theirs.
    pub fn watched(&self) -> Vec<Watched> {
        let Ok(inner) = self.0.read() else {
            return Vec::new();
        };
        inner
            .engines
            .keys()
            .cloned()
            .map(Watched::Events)
            .chain(
                inner
                    .followers
                    .iter()
                    .map(|a| Watched::CalendarList { account: a.clone() }),
            )
            .collect()
    }

    pub fn keys(&self) -> Vec<CalendarKey> {
        self.0
            .read()
            .map(|i| i.engines.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The ids of the running calendars of `account`.
    fn ids_of(&self, account: &str) -> Vec<String> {
        let Ok(inner) = self.0.read() else {
            return Vec::new();
        };
        let from = CalendarKey::new(account, "");
        (inner.engines.range(from..))
            .map(|(key, _)| key)
            .take_while(|key| key.account == account)
            .map(|key| key.calendar_id.clone())
            .collect()
    }

    /// Whether `watched` is still followed.
    pub fn contains(&self, watched: &Watched) -> bool {
        match watched {
            Watched::CalendarList { account } => self.follows(account),
            Watched::Events(key) => self.0.read().is_ok_and(|i| i.engines.contains_key(key)),
        }
    }

    /// Every account's client, by account name.
    pub fn clients(&self) -> Vec<(String, Arc<GoogleClient>)> {
        self.0.read().map_or_else(
            |_| Vec::new(),
            |i| {
                i.clients
                    .iter()
                    .map(|(a, c)| (a.clone(), c.clone()))
                    .collect()
            },
        )
    }

    pub fn client(&self, account: &str) -> Option<Arc<GoogleClient>> {
        self.0.read().ok()?.clients.get(account).cloned()
    }

    pub fn len(&self) -> usize {
        self.0.read().map_or(0, |i| i.engines.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything needed to start an engine.
pub(crate) struct Starter {
    /// What every engine shares (the store, the feed, the board...).
    deps: Arc<EngineDeps>,
    tasks: Tasks,
    stop: CancellationToken,
    pub calendars: Calendars,
    http: reqwest::Client,
}

/// What [`Starter::new`] needs from the daemon.
pub(crate) struct StarterDeps {
    pub store: Store,
    pub feed: Feed,
    pub board: StatusBoard,
    pub tasks: Tasks,
    pub stop: CancellationToken,
    pub metrics: Metrics,
}

/// What [`Starter::apply`] changed.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub added: Vec<CalendarKey>,
    /// Removed calendars, with what the config said to do with their events.
    pub removed: Vec<(CalendarKey, OnCalendarRemoved)>,
    /// Accounts whose calendars could not be told: set-up failed, or the
    /// calendar list could not be read (their calendars were left as they
    /// were). Tried again soon.
    pub unsettled: Vec<String>,
}

impl Starter {
    pub(crate) fn new(cfg: &Config, deps: StarterDeps) -> Self {
        let StarterDeps {
            store,
            feed,
            board,
            tasks,
            stop,
            metrics,
        } = deps;
        Starter {
            deps: Arc::new(EngineDeps {
                store,
                feed,
                board,
                permits: crate::sync::Permits::new(cfg.sync.max_concurrent),
                metrics,
            }),
            tasks,
            stop,
            calendars: Calendars::default(),
            http: GoogleClient::http_client(),
        }
    }

    /// The store and feed the engines write to.
    pub(crate) fn store_and_feed(&self) -> (&Store, &Feed) {
        (&self.deps.store, &self.deps.feed)
    }

    /// Makes the running calendars those of `cfg`: starts engines for new
    /// ones, stops the engines of removed ones. `old` is the configuration
    /// being replaced (None at start), for `on_calendar_removed`.
    pub(crate) async fn apply(&self, cfg: &Config, old: Option<&Config>) -> Applied {
        let settings = SyncSettings {
            page_size: cfg.sync.page_size,
            single_events: cfg.sync.single_events,
            poll_interval: cfg.sync.poll_interval,
            debounce: cfg.sync.debounce,
            retry_base: cfg.sync.retry_base,
        };
        let mut applied = Applied::default();
        let mut wanted: BTreeMap<CalendarKey, Arc<GoogleClient>> = BTreeMap::new();
        for account in &cfg.accounts {
            let client = match self.calendars.client(&account.name) {
                Some(c) => c,
                None => match client(cfg, account, &self.http).await {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::error!(account = %account.name, error = %e, "cannot set up the account; its calendars will not sync until it can");
                        applied.unsettled.push(account.name.clone());
                        continue;
                    }
                },
            };
            let ids = match calendar_ids(account, &client).await {
                Some(ids) => ids,
                // An unread list is not an empty one: taking it as such
                // would write a `deleted` record for every event of every
                // calendar of the account, and create them all again at
                // the next read. Its calendars stay as they are.
                None => {
                    applied.unsettled.push(account.name.clone());
                    self.calendars.ids_of(&account.name)
                }
            };
            client.set_followed(ids.len());
            let floor = client.poll_floor();
            if floor > cfg.sync.poll_interval {
                tracing::info!(account = %account.name, calendars = ids.len(), requests_per_minute = account.requests_per_minute, poll_interval = %humantime::format_duration(round_secs(floor)), "safety-net polls spaced out to stay within 20% of the account's quota (sync.poll_interval is shorter)");
            }
            // Renewals of channels made in one burst come due together
            // (spread over at most renew_before / 2): they must fit in
            // renew_before with room to spare, or channels lapse.
            let renewal = client.renewal_time();
            if renewal > cfg.channels.renew_before / 2 {
                tracing::warn!(account = %account.name, calendars = ids.len(), requests_per_minute = account.requests_per_minute, renew_all = %humantime::format_duration(round_secs(renewal)), renew_before = %humantime::format_duration(cfg.channels.renew_before), "replacing every channel takes more than half of channels.renew_before at this quota; channels may lapse: raise channels.renew_before (and channels.ttl) or requests_per_minute");
            }
            for id in ids {
                wanted.insert(CalendarKey::new(&account.name, &id), client.clone());
            }
            if let Ok(mut inner) = self.calendars.0.write() {
                inner.clients.insert(account.name.clone(), client);
                if account.calendars == CalendarSelection::All {
                    inner.followers.insert(account.name.clone());
                } else {
                    inner.followers.remove(&account.name);
                }
            }
        }
        for key in self.calendars.keys() {
            if !wanted.contains_key(&key) {
                let engine = match self.calendars.0.write() {
                    Ok(mut inner) => inner.engines.remove(&key),
                    Err(_) => None,
                };
                if let Some(Running { stop, task, .. }) = engine {
                    // Wait for the engine's last page, so that nothing it
                    // writes can land after the calendar's final records.
                    stop.cancel();
                    if tokio::time::timeout(std::time::Duration::from_secs(30), task)
                        .await
                        .is_err()
                    {
                        tracing::warn!(account = %key.account, calendar = %key.calendar_id, "engine did not stop within 30 s");
                    }
                }
                self.deps.board.remove(&key);
                let policy = old
                    .and_then(|o| o.accounts.iter().find(|a| a.name == key.account))
                    .map_or(OnCalendarRemoved::EmitDeletes, |a| a.on_calendar_removed);
                tracing::info!(account = %key.account, calendar = %key.calendar_id, "calendar removed from the configuration");
                applied.removed.push((key, policy));
            }
        }
        for (key, client) in wanted {
            if self.calendars.contains(&Watched::Events(key.clone())) {
                continue;
            }
            let trigger = Trigger::default();
            let stop = self.stop.child_token();
            let engine = Engine::new(
                key.clone(),
                client,
                settings.clone(),
                trigger.clone(),
                stop.clone(),
                self.deps.clone(),
            );
            let name = format!("sync {}/{}", key.account, key.calendar_id);
            let task = self.tasks.spawn(name, &stop, engine.run());
            if let Ok(mut inner) = self.calendars.0.write() {
                inner.engines.insert(
                    key.clone(),
                    Running {
                        trigger,
                        stop,
                        task,
                    },
                );
            }
            if old.is_some() {
                tracing::info!(account = %key.account, calendar = %key.calendar_id, "calendar added to the configuration");
            }
            applied.added.push(key);
        }
        applied
    }
}

async fn client(
    cfg: &Config,
    account: &Account,
    http: &reqwest::Client,
) -> Result<GoogleClient, crate::google::GoogleError> {
    let scope = if account.write {
        SCOPE_READWRITE
    } else {
        SCOPE_READONLY
    };
    let auth = Authenticator::new(
        &account.credentials,
        account.subject.as_deref(),
        vec![scope.to_string()],
        http.clone(),
    )
    .await?;
    Ok(GoogleClient::new(
        &cfg.google.api_base_url,
        auth,
        account.requests_per_minute,
        http.clone(),
    ))
}

/// The calendars `account` follows (`"all"`: read from its calendarList);
/// None when its calendar list could not be read whole.
async fn calendar_ids(account: &Account, client: &GoogleClient) -> Option<Vec<String>> {
    match &account.calendars {
        CalendarSelection::List(ids) => Some(ids.clone()),
        CalendarSelection::All => {
            let mut ids = Vec::new();
            let mut page: Option<String> = None;
            loop {
                match client.calendar_list(page.as_deref(), None).await {
                    Ok((items, next, _)) => {
                        ids.extend(
                            items
                                .iter()
                                .filter(|i| {
                                    i.get("deleted") != Some(&serde_json::Value::Bool(true))
                                })
                                .filter_map(|i| {
                                    i.get("id").and_then(|v| v.as_str()).map(String::from)
                                }),
                        );
                        match next {
                            Some(n) => page = Some(n),
                            None => return Some(ids),
                        }
                    }
                    Err(e) => {
                        tracing::error!(account = %account.name, error = %e, "cannot read the calendar list; its calendars stay as they were until it is read again");
                        return None;
                    }
                }
            }
        }
    }
}

/// `d` to whole seconds, for logs.
fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

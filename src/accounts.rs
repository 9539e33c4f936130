//! Starts the sync side of the daemon from the configuration: one Google
//! client per account (authenticator + rate limiter), one engine per
//! calendar, all on the daemon's task tracker. Returns the calendars and
//! their triggers, which the hook and the channel scheduler poke.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Account, CalendarSelection, Config};
use crate::feed::Feed;
use crate::google::{Authenticator, GoogleClient, SCOPE_READONLY, SCOPE_READWRITE};
use crate::metrics::Metrics;
use crate::store::{CalendarKey, Store};
use crate::sync::{Engine, StatusBoard, SyncSettings, Trigger};

/// The running calendars.
pub struct Calendars {
    /// Every configured calendar with the trigger of its engine.
    pub triggers: BTreeMap<CalendarKey, Trigger>,
    /// The Google client of each account.
    pub clients: BTreeMap<String, Arc<GoogleClient>>,
}

/// Builds clients and spawns an engine per calendar.
pub async fn start(
    cfg: &Config,
    store: &Store,
    feed: &Feed,
    board: &StatusBoard,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Calendars {
    let settings = SyncSettings {
        page_size: cfg.sync.page_size,
        single_events: cfg.sync.single_events,
        poll_interval: cfg.sync.poll_interval,
        debounce: cfg.sync.debounce,
        retry_base: cfg.sync.retry_base,
    };
    let permits = Arc::new(Semaphore::new(cfg.sync.max_concurrent));
    let http = GoogleClient::http_client();
    let mut out = Calendars {
        triggers: BTreeMap::new(),
        clients: BTreeMap::new(),
    };
    for account in &cfg.accounts {
        let client = match client(cfg, account, &http).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(account = %account.name, error = %e, "cannot set up the account; its calendars will not sync");
                continue;
            }
        };
        for calendar_id in calendar_ids(account, &client).await {
            let key = CalendarKey::new(&account.name, &calendar_id);
            let trigger = Trigger::default();
            let engine = Engine::new(
                key.clone(),
                client.clone(),
                store.clone(),
                feed.clone(),
                settings.clone(),
                board.clone(),
                trigger.clone(),
                permits.clone(),
                stop.clone(),
                metrics.clone(),
            );
            tracker.spawn(engine.run());
            out.triggers.insert(key, trigger);
        }
        out.clients.insert(account.name.clone(), client);
    }
    out
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

/// The account's calendars; `"all"` is read from its calendarList once.
async fn calendar_ids(account: &Account, client: &GoogleClient) -> Vec<String> {
    match &account.calendars {
        CalendarSelection::List(ids) => ids.clone(),
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
                            None => return ids,
                        }
                    }
                    Err(e) => {
                        tracing::error!(account = %account.name, error = %e, "cannot read the calendar list; following none of its calendars until restart");
                        return ids;
                    }
                }
            }
        }
    }
}

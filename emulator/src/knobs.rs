//! Everything a test can turn: fixed options at start, push behaviour and
//! injected faults at any time. All random decisions draw from the
//! emulator's seeded generator.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fixed at start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed of every random decision (order, ids, faults, push knobs).
    pub seed: u64,
    /// Let channels use http:// addresses (Google demands https).
    pub allow_http: bool,
    /// Longest channel lifetime granted, whatever the client asks.
    pub max_channel_ttl: Duration,
    /// Sync tokens older than this answer 410.
    pub sync_token_ttl: Duration,
    /// Tombstones are kept this long; older sync tokens then answer 410.
    pub tombstone_retention: Duration,
    /// updatedMin further back than this answers 410.
    pub updated_min_horizon: Duration,
    pub access_token_lifetime: Duration,
    /// Tolerated clock difference on JWT iat/exp.
    pub jwt_clock_skew: Duration,
    /// Open series are expanded this far ahead.
    pub expansion_horizon: Duration,
    /// Shown in channels.stop errors, as Google shows the project number.
    pub project_number: u64,
}

impl Default for Options {
    fn default() -> Self {
        let day = Duration::from_secs(86400);
        Options {
            seed: 0x5eed,
            allow_http: false,
            max_channel_ttl: 7 * day,
            sync_token_ttl: 7 * day,
            tombstone_retention: 7 * day,
            updated_min_horizon: 30 * day,
            access_token_lifetime: Duration::from_secs(3599),
            jwt_clock_skew: Duration::from_secs(120),
            expansion_horizon: 366 * day,
            project_number: 428_113_002_917,
        }
    }
}

/// Push delivery behaviour, changeable at run time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushKnobs {
    /// Share of notifications never sent (0.0..=1.0).
    pub drop_rate: f64,
    /// Share of notifications sent twice.
    pub duplicate_rate: f64,
    /// Every notification waits this long before it is sent (ms).
    pub delay_ms: u64,
    /// Plus a random 0..this (ms), which reorders them.
    pub reorder_ms: u64,
    /// Changes within this window (ms) share one notification.
    pub coalesce_ms: u64,
    /// A change becomes visible to list this long (ms) after its ping is sent.
    pub visibility_lag_ms: u64,
    /// Stopped channels keep delivering this long (ms).
    pub after_stop_ms: u64,
    /// Deliver the `sync` message before answering events.watch.
    pub sync_before_response: bool,
    /// Chance of a gap in message numbers.
    pub number_gap_rate: f64,
    /// Retries of a 500/502/503/504 answer, with doubling backoff.
    pub retries: u32,
    pub retry_base_ms: u64,
}

impl Default for PushKnobs {
    fn default() -> Self {
        PushKnobs {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            delay_ms: 0,
            reorder_ms: 0,
            coalesce_ms: 0,
            visibility_lag_ms: 0,
            after_stop_ms: 0,
            sync_before_response: false,
            number_gap_rate: 0.3,
            retries: 3,
            retry_base_ms: 100,
        }
    }
}

/// What an injected fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 401 authError.
    Unauthorized,
    /// 403 rateLimitExceeded.
    #[serde(rename = "rate_limit_403")]
    RateLimit403,
    /// 403 userRateLimitExceeded.
    #[serde(rename = "user_rate_limit_403")]
    UserRateLimit403,
    /// 429 rateLimitExceeded.
    #[serde(rename = "rate_limit_429")]
    RateLimit429,
    /// 500 backendError.
    #[serde(rename = "backend_500")]
    Backend500,
    /// 503 backendError.
    #[serde(rename = "unavailable_503")]
    Unavailable503,
    /// Answer correctly, but only after `slow_ms`.
    Slow,
    /// Close the connection without an answer.
    Drop,
    /// events.list answers, but its first item's `id` is a number (a
    /// malformed answer the client must not take as a page).
    BadItemId,
}

/// A fault applied to matching requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// Share of matching requests hit (1.0: every one).
    #[serde(default = "one")]
    pub rate: f64,
    /// Only this method (`events.list`, `events.watch`, `token`, ...).
    #[serde(default)]
    pub method: Option<String>,
    /// Hit at most this many requests, then the rule is spent.
    #[serde(default)]
    pub remaining: Option<u32>,
    /// For `slow`.
    #[serde(default)]
    pub slow_ms: u64,
}

fn one() -> f64 {
    1.0
}

/// Sliding-minute quotas (Google: 600 per user, 10,000 per project).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaKnobs {
    pub per_user_per_minute: u32,
    pub per_project_per_minute: u32,
    /// Status for the project quota: 403 or 429 (Google uses both).
    pub project_status: u16,
}

impl Default for QuotaKnobs {
    fn default() -> Self {
        QuotaKnobs {
            per_user_per_minute: 600,
            per_project_per_minute: 10_000,
            project_status: 429,
        }
    }
}

//! Google Calendar v3, as the daemon uses it: events.list, events.watch,
//! channels.stop and calendarList.list against `google.api_base_url`, with
//! OAuth for service accounts and authorized users. Failures come back as a
//! [`GoogleError`] whose variants are what the engine branches on. Knows
//! nothing of the store or of retry policy.

mod auth;
mod client;
mod event;
mod limiter;

pub(crate) use limiter::Urgency;

pub(crate) use auth::Authenticator;
pub(crate) use client::{EventsPage, GoogleClient, ListParams};
pub(crate) use event::EventHead;

use std::time::Duration;

/// Read-only access to calendars and events.
pub(crate) const SCOPE_READONLY: &str = "https://www.googleapis.com/auth/calendar.readonly";
/// Read-write access, for accounts with `write = true`.
pub(crate) const SCOPE_READWRITE: &str = "https://www.googleapis.com/auth/calendar";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong talking to Google, sorted by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    /// 410 fullSyncRequired (or updatedMinTooLongAgo), or a 400 naming the
    /// `syncToken` parameter ("Invalid sync token value."): drop the token,
    /// full sync. Retrying the same token never helps.
    #[error("sync token no longer valid ({status} {reason})")]
    SyncTokenGone { status: u16, reason: String },
    /// 401 even after a fresh token: the account needs re-authorisation.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 429, or 403 rate limits: back off, at least `retry_after`.
    #[error("rate limited ({reason})")]
    RateLimited {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 5xx, timeouts, resets: back off and retry.
    #[error("transient failure: {0}")]
    Transient(BoxError),
    /// 404: the calendar (or channel) does not exist or is not visible.
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other 4xx: log it, back off long, keep running.
    #[error("rejected with {status} {reason}: {message}")]
    Rejected {
        status: u16,
        reason: String,
        message: String,
    },
    /// The token endpoint refused the credentials.
    #[error("cannot get an access token: {0}")]
    Auth(String),
    /// A watch request Google refuses for this resource
    /// (`pushNotSupportedForRequestedResource`): poll it instead.
    #[error("push notifications are not supported for this resource: {0}")]
    PushNotSupported(String),
}

impl GoogleError {
    /// Worth retrying soon (with backoff)?
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GoogleError::Transient(_) | GoogleError::RateLimited { .. }
        )
    }

    /// A short reason label (metrics, status).
    pub fn reason(&self) -> &str {
        match self {
            GoogleError::SyncTokenGone { .. } => "fullSyncRequired",
            GoogleError::Unauthorized(_) => "authError",
            GoogleError::RateLimited { reason, .. } => reason,
            GoogleError::Transient(_) => "transient",
            GoogleError::NotFound(_) => "notFound",
            GoogleError::Rejected { reason, .. } => reason,
            GoogleError::Auth(_) => "tokenRefused",
            GoogleError::PushNotSupported(_) => "pushNotSupportedForRequestedResource",
        }
    }
}

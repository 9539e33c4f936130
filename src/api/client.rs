//! The command line's side of the local API: `gcal-syncd status` and
//! `gcal-syncd sinks` ask the running daemon.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::secret::Secret;
use crate::status::CalendarsAnswer;

/// A failed call: the daemon is not there, or it answered with an error.
#[derive(Debug)]
pub enum CallError {
    /// Nothing answers at the daemon's API address.
    Unreachable(String),
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) | CallError::Failed(why) => f.write_str(why),
        }
    }
}

async fn call(
    addr: SocketAddr,
    token: Option<&Secret>,
    method: reqwest::Method,
    path: &str,
) -> Result<Value, CallError> {
    crate::tls::ensure_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CallError::Failed(e.to_string()))?;
    let mut req = http.request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req.send().await.map_err(|e| {
        let why = format!("cannot reach gcal-syncd at {addr}: {e}");
        if e.is_connect() {
            CallError::Unreachable(why)
        } else {
            CallError::Failed(why)
        }
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| CallError::Failed(format!("unexpected answer from {addr}: {e}")))?;
    if !status.is_success() {
        return Err(CallError::Failed(format!(
            "{addr} answered {status}: {}",
            body["error"].as_str().unwrap_or("")
        )));
    }
    Ok(body)
}

/// `GET /v1/calendars` of the daemon at `addr`, for `gcal-syncd status`.
pub async fn fetch_calendars(
    addr: SocketAddr,
    token: Option<&Secret>,
) -> Result<CalendarsAnswer, String> {
    let body = call(addr, token, reqwest::Method::GET, "/v1/calendars")
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_value(body).map_err(|e| format!("unexpected answer from {addr}: {e}"))
}

/// `GET /v1/sinks` of the daemon at `addr`.
pub async fn fetch_sinks(addr: SocketAddr, token: Option<&Secret>) -> Result<Value, String> {
    call(addr, token, reqwest::Method::GET, "/v1/sinks")
        .await
        .map_err(|e| e.to_string())
}

/// `POST /v1/sinks/{name}/reset` of the daemon at `addr`.
pub async fn reset_sink(
    addr: SocketAddr,
    token: Option<&Secret>,
    name: &str,
) -> Result<Value, CallError> {
    call(
        addr,
        token,
        reqwest::Method::POST,
        &format!("/v1/sinks/{name}/reset"),
    )
    .await
}

//! The demo's webhook receiver: what an application behind a `[[sinks]]`
//! webhook does. It checks every POST's Standard Webhooks signature with
//! the shared secret (with ring and base64 directly, not the daemon's
//! signer), drops a batch it has seen by `webhook-id`, and keeps the seqs
//! in the order they arrived.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::http::{self, Limits};

/// What the receiver got so far.
#[derive(Debug, Default, Clone)]
pub(super) struct Received {
    /// Seqs of accepted batches, in arrival order.
    pub(super) seqs: Vec<u64>,
    /// POSTs with a valid signature (repeats included).
    pub(super) verified: u64,
    /// POSTs refused: bad or missing signature, or not a batch.
    pub(super) refused: u64,
    seen_ids: Vec<String>,
}

pub(super) struct Receiver {
    pub(super) url: String,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    /// Serves on `listener` until `stop`; `secret` is the `whsec_` secret.
    pub(super) fn start(
        listener: tokio::net::TcpListener,
        secret: &str,
        stop: CancellationToken,
    ) -> Result<Receiver, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .map_err(|e| format!("the demo's secret is not base64: {e}"))?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let url = format!(
            "http://{}/calendar-changes",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let got: Arc<Mutex<Received>> = Arc::default();
        let state = (got.clone(), key);
        let handler = move |req: hyper::Request<hyper::body::Incoming>| {
            let (got, key) = state.clone();
            async move {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (id, ts, sig) = (
                    header("webhook-id"),
                    header("webhook-timestamp"),
                    header("webhook-signature"),
                );
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return http::empty(StatusCode::BAD_REQUEST),
                };
                let verified = match (&id, &ts, &sig) {
                    (Some(id), Some(ts), Some(sig)) => verify(&key, id, ts, sig, &body),
                    _ => false,
                };
                let batch: Option<Vec<u64>> =
                    serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                        v["changes"]
                            .as_array()
                            .map(|c| c.iter().filter_map(|r| r["seq"].as_u64()).collect())
                    });
                let mut got = got.lock().unwrap_or_else(|p| p.into_inner());
                match (verified, batch, id) {
                    (true, Some(seqs), Some(id)) => {
                        got.verified += 1;
                        if !got.seen_ids.contains(&id) {
                            got.seen_ids.push(id);
                            got.seqs.extend(seqs);
                        }
                        http::empty(StatusCode::NO_CONTENT)
                    }
                    _ => {
                        got.refused += 1;
                        http::empty(StatusCode::UNAUTHORIZED)
                    }
                }
            }
        };
        tokio::spawn(http::serve(
            "demo receiver",
            listener,
            Limits::API,
            handler,
            stop,
        ));
        Ok(Receiver { url, got })
    }

    pub(super) fn received(&self) -> Received {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// True when one of `sig`'s `v1,` signatures is the HMAC of
/// `id.timestamp.body` under `key`.
fn verify(key: &ring::hmac::Key, id: &str, ts: &str, sig: &str, body: &[u8]) -> bool {
    let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
    sig.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .is_some_and(|tag| ring::hmac::verify(key, &signed, &tag).is_ok())
    })
}

/// A fresh `whsec_` secret of 32 random bytes.
pub(super) fn new_secret() -> Result<String, String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for the demo's webhook secret".to_string())?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

//! One webhook delivery: a POST of `{"changes": [...]}` with the Standard
//! Webhooks headers. `webhook-id` names the batch (the store and its seq
//! range), so it stays the same across retries and a receiver can drop a
//! batch it has seen; the timestamp and signature are made per attempt.

use std::time::Duration;

use super::{Refused, Signer};
use crate::store::ChangeRecord;

pub(super) struct Webhook {
    url: reqwest::Url,
    signer: Signer,
    store_id: String,
    http: reqwest::Client,
}

impl Webhook {
    pub(super) fn new(
        url: reqwest::Url,
        signer: Signer,
        store_id: &str,
        timeout: Duration,
    ) -> Webhook {
        crate::tls::ensure_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Webhook {
            url,
            signer,
            store_id: store_id.to_string(),
            http,
        }
    }

    pub(super) async fn send(&self, batch: &[ChangeRecord]) -> Result<(), Refused> {
        let (first, last) = match (batch.first(), batch.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Ok(()),
        };
        let id = super::batch_id(&self.store_id, first, last);
        let body = super::batch_body(batch)?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.signer.sign(&id, timestamp, &body);
        let answer = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status() == reqwest::StatusCode::GONE => Err(Refused::Gone),
            Ok(r) => Err(Refused::Failed(format!(
                "the receiver answered {}",
                r.status()
            ))),
            Err(e) => Err(Refused::Failed(format!(
                "cannot reach the receiver: {}",
                e.without_url()
            ))),
        }
    }
}

//! One NATS JetStream delivery: each record of the batch is published as
//! its own message, subject `<prefix>.<account>.<calendar>` (tokens encoded
//! by [`subject_token`]), header `Nats-Msg-Id` = `<store id>-<seq>`, so that
//! JetStream's duplicate window drops a record published again after a
//! retry or a crash. The batch is acknowledged once JetStream acknowledged
//! every message, in the stream the sink names.

use std::time::Duration;

use async_nats::jetstream;
use hyper::body::Bytes;
use tokio::sync::Mutex;

use super::Refused;
use crate::config::NatsTarget;
use crate::secret::Secret;
use crate::store::ChangeRecord;

pub(super) struct Nats {
    url: String,
    stream: String,
    prefix: String,
    credentials: Option<Secret>,
    store_id: String,
    timeout: Duration,
    /// Connected on first use and kept; the client reconnects by itself.
    js: Mutex<Option<jetstream::Context>>,
}

impl Nats {
    pub(super) fn new(
        target: &NatsTarget,
        credentials: Option<Secret>,
        store_id: &str,
        timeout: Duration,
    ) -> Nats {
        Nats {
            url: target.url.clone(),
            stream: target.stream.clone(),
            prefix: target.subject_prefix.clone(),
            credentials,
            store_id: store_id.to_string(),
            timeout,
            js: Mutex::new(None),
        }
    }

    async fn context(&self) -> Result<jetstream::Context, Refused> {
        let mut js = self.js.lock().await;
        if let Some(c) = js.as_ref() {
            return Ok(c.clone());
        }
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout)
            .name("gcal-syncd");
        if let Some(creds) = &self.credentials {
            options = options.credentials(creds.expose()).map_err(|e| {
                Refused::Failed(format!("the NATS credentials are not usable: {e}"))
            })?;
        }
        let client = options
            .connect(self.url.as_str())
            .await
            .map_err(|e| Refused::Failed(format!("cannot connect to NATS: {e}")))?;
        let mut context = jetstream::new(client);
        context.set_timeout(self.timeout);
        *js = Some(context.clone());
        Ok(context)
    }

    pub(super) async fn send(&self, batch: &[ChangeRecord]) -> Result<(), Refused> {
        let js = self.context().await?;
        let mut acks = Vec::with_capacity(batch.len());
        // All published first, then every ack awaited: one round trip per
        // batch, not per record.
        for record in batch {
            let subject = format!(
                "{}.{}.{}",
                self.prefix,
                subject_token(&record.account),
                subject_token(&record.calendar_id)
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id(&self.store_id, record).as_str());
            let payload = serde_json::to_vec(record)
                .map_err(|e| Refused::Failed(format!("cannot encode a record: {e}")))?;
            let ack = js
                .publish_with_headers(subject, headers, Bytes::from(payload))
                .await
                .map_err(|e| Refused::Failed(format!("cannot publish to NATS: {e}")))?;
            acks.push((record.seq, ack));
        }
        for (seq, ack) in acks {
            let ack = ack.await.map_err(|e| {
                Refused::Failed(format!("JetStream did not acknowledge seq {seq}: {e}"))
            })?;
            if ack.stream != self.stream {
                return Err(Refused::Failed(format!(
                    "seq {seq} went to stream {:?}, not {:?}: the subject prefix is captured by another stream",
                    ack.stream, self.stream
                )));
            }
        }
        Ok(())
    }
}

/// The `Nats-Msg-Id` of a record: unique in the store and across stores.
fn msg_id(store_id: &str, record: &ChangeRecord) -> String {
    format!("{store_id}-{}", record.seq)
}

/// An account name or calendar id as one NATS subject token: ASCII
/// letters, digits, `-`, `_` and `@` as they are; every other byte
/// (`.`, `*`, `>`, spaces, `%`, non-ASCII) as `%` and two uppercase hex
/// digits. Reversible, and never empty (`%00`-free: an empty value is `%`).
pub(super) fn subject_token(value: &str) -> String {
    if value.is_empty() {
        return "%".to_string();
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::subject_token;

    #[test]
    fn calendar_ids_become_single_reversible_subject_tokens() {
        assert_eq!(subject_token("primary"), "primary");
        assert_eq!(
            subject_token("team.rooms@group.calendar.google.com"),
            "team%2Erooms@group%2Ecalendar%2Egoogle%2Ecom"
        );
        assert_eq!(
            subject_token("en.usa#holiday@group.v.calendar.google.com"),
            "en%2Eusa%23holiday@group%2Ev%2Ecalendar%2Egoogle%2Ecom"
        );
        assert_eq!(subject_token("a b*c>d%"), "a%20b%2Ac%3Ed%25");
        assert_eq!(subject_token("Zoë"), "Zo%C3%AB");
        assert_eq!(subject_token(""), "%");
        for id in ["x.y", "a b", "*", ">", "ü", "%41"] {
            let t = subject_token(id);
            assert!(
                !t.contains(['.', '*', '>', ' ']) && !t.is_empty(),
                "{id} -> {t}"
            );
        }
        // Different ids never share a token.
        assert_ne!(subject_token("%41"), subject_token("A"));
    }
}

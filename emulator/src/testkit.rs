//! Helpers for tests and benches that talk to the emulator over real HTTP
//! (this package's conformance tests and the daemon's tests): start one on
//! port 0, sign service-account JWTs with ring, get access tokens, a
//! Calendar API client, a ping receiver that records Google's push
//! notifications, waiting on a condition with a deadline, and a temporary
//! directory. Test code: every helper panics with a message when its step
//! fails, which is how a test fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::dates;
use crate::{Emulator, Options};

pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";
pub const READONLY_SCOPE: &str = "https://www.googleapis.com/auth/calendar.readonly";

pub async fn start(opts: Options) -> Emulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    Emulator::start(listener, opts)
        .await
        .expect("start emulator")
}

pub async fn start_default() -> Emulator {
    start(Options {
        allow_http: true,
        ..Default::default()
    })
    .await
}

pub fn http() -> reqwest::Client {
    crate::http::ensure_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Claims of a JWT-bearer assertion, adjustable per test.
pub struct Claims<'a> {
    pub scope: &'a str,
    pub sub: Option<&'a str>,
    pub aud: Option<String>,
    /// Seconds added to now for `iat`.
    pub iat_offset: i64,
    /// `exp - iat`.
    pub lifetime: i64,
}

impl Default for Claims<'_> {
    fn default() -> Self {
        Claims {
            scope: CALENDAR_SCOPE,
            sub: None,
            aud: None,
            iat_offset: -5,
            lifetime: 3600,
        }
    }
}

/// A signed assertion made from a service-account key file.
pub fn assertion(key_file: &str, token_uri: &str, claims: &Claims<'_>) -> String {
    let key: Value = serde_json::from_str(key_file).expect("key json");
    let pem = key["private_key"].as_str().expect("pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("pem base64");
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("rsa key");
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = chrono::Utc::now().timestamp() + claims.iat_offset;
    let mut body = json!({
        "iss": key["client_email"], "scope": claims.scope,
        "aud": claims.aud.clone().unwrap_or_else(|| token_uri.to_string()),
        "iat": now, "exp": now + claims.lifetime,
    });
    if let Some(sub) = claims.sub {
        body["sub"] = json!(sub);
    }
    let signing_input = format!(
        "{}.{}",
        enc(&json!({"alg": "RS256", "typ": "JWT", "kid": key["private_key_id"]})),
        enc(&body)
    );
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

/// POSTs an assertion to the token endpoint; returns status and body.
pub async fn token_response(emu: &Emulator, assertion: &str) -> (u16, Value) {
    let resp = http()
        .post(emu.token_uri())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .expect("token request");
    (
        resp.status().as_u16(),
        resp.json().await.expect("token json"),
    )
}

/// An access token of the built-in service account.
pub async fn access_token(emu: &Emulator, scope: &str) -> String {
    let a = assertion(
        &emu.service_account_json(),
        &emu.token_uri(),
        &Claims {
            scope,
            ..Default::default()
        },
    );
    let (status, body) = token_response(emu, &a).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// A Calendar API client bound to one emulator and token.
pub struct Api {
    pub root: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn new(emu: &Emulator) -> Api {
        Api {
            root: emu.api_root(),
            token: access_token(emu, CALENDAR_SCOPE).await,
            http: http(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.root))
            .bearer_auth(&self.token)
            .query(query);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("api call");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).expect("json body")
            },
        )
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// Lists `path` to the end; returns every item and the sync token.
    pub async fn list_all(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> (Vec<Value>, Option<String>) {
        let mut items = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..10_000 {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(p) = &page {
                q.push(("pageToken", p));
            }
            let (status, body) = self.get(path, &q).await;
            assert_eq!(status, 200, "{body}");
            assert!(
                !(body.get("nextPageToken").is_some() && body.get("nextSyncToken").is_some()),
                "both tokens: {body}"
            );
            items.extend(body["items"].as_array().cloned().unwrap_or_default());
            match body.get("nextPageToken").and_then(Value::as_str) {
                Some(p) => page = Some(p.to_string()),
                None => {
                    return (
                        items,
                        body.get("nextSyncToken")
                            .and_then(Value::as_str)
                            .map(String::from),
                    )
                }
            }
        }
        panic!("listing never ended");
    }
}

/// The reason of a Google error body.
pub fn reason(body: &Value) -> &str {
    body["error"]["errors"][0]["reason"].as_str().unwrap_or("")
}

/// A timed event body, `day` days from today.
pub fn event(summary: &str, day: u32) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": dates::utc(i64::from(day), 10, 0)},
        "end": {"dateTime": dates::utc(i64::from(day), 11, 0)},
    })
}

/// One push notification as received.
#[derive(Debug, Clone)]
pub struct Ping {
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body: Vec<u8>,
}

impl Ping {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP server that records requests (pings, webhook posts) and answers with the next
/// status of `statuses` (the last one repeats).
pub struct Receiver {
    pub url: String,
    pub pings: Arc<Mutex<Vec<Ping>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    pub async fn start(statuses: Vec<u16>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Receiver::serve(listener, statuses)
    }

    /// A receiver on `listener` (one bound where a receiver that was down
    /// comes back).
    pub fn serve(listener: tokio::net::TcpListener, statuses: Vec<u16>) -> Receiver {
        let url = format!("http://{}/notify", listener.local_addr().expect("addr"));
        let pings: Arc<Mutex<Vec<Ping>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let (record, statuses) = (pings.clone(), Arc::new(Mutex::new(statuses)));
        let handler = move |req: hyper::Request<hyper::body::Incoming>| {
            let (record, statuses) = (record.clone(), statuses.clone());
            async move {
                use http_body_util::BodyExt;
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                record.lock().expect("lock").push(Ping {
                    headers,
                    body_len: body.len(),
                    body,
                });
                let status = {
                    let mut s = statuses.lock().expect("lock");
                    if s.len() > 1 {
                        s.remove(0)
                    } else {
                        s.first().copied().unwrap_or(200)
                    }
                };
                Ok(crate::http::empty(
                    hyper::StatusCode::from_u16(status).expect("status"),
                ))
            }
        };
        tokio::spawn(crate::http::serve(listener, handler, stop.clone()));
        Receiver { url, pings, stop }
    }

    pub fn pings(&self) -> Vec<Ping> {
        self.pings.lock().expect("lock").clone()
    }

    /// Waits until `cond` holds over the received pings.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&[Ping]) -> bool,
    ) -> Vec<Ping> {
        wait_until(what, within, || {
            let p = self.pings();
            cond(&p).then_some(p)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `probe` until it yields a value, or panics after `within`.
pub async fn wait_until<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`], for async probes.
pub async fn wait_until_async<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("gcal-syncd-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

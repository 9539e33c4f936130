//! A strict Google Calendar v3 emulator, with OAuth, push notifications and
//! fault injection. Built from shared/docs/gcal-api-behavior.md; where Google's
//! behaviour is unknown it takes the stricter choice (and makes it a knob).
//!
//! A package of its own (the daemon depends on it for `demo` and
//! `gcal-syncd emulator`, never the other way): it cannot import the
//! daemon's sync, store, Google client or HTTP code, so that a shared
//! misunderstanding cannot hide a bug on both sides.
//!
//! # Layout
//! - `server`: HTTP routing, faults, auth and quota per call.
//! - `auth`: the token endpoint (JWT bearer, refresh token) and scopes.
//! - `calendar`, `event`, `recur`: calendars, events, recurring series.
//! - `list`: events.list with paging and sync tokens; `calendars`:
//!   calendars.insert and calendarList.list.
//! - `channels`, `push`: watch/stop and the delivery task.
//! - `control`: the control API (Rust and `/emulator/v1/`).
//! - `world`: all state, behind one mutex; `knobs`, `rng`, `token`, `error`.
//! - `http`: its own small hyper server.
//! - `dates`: event times relative to today, so nothing a test sends ages.
//! - `testkit` (hidden): the helpers the tests and benches of both packages
//!   drive the emulator with.

mod auth;
mod calendar;
mod calendars;
mod channels;
mod control;
pub mod dates;
mod error;
mod event;
mod http;
mod knobs;
mod list;
mod push;
mod recur;
mod rng;
mod server;
#[doc(hidden)]
pub mod testkit;
mod token;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use control::{control_api_help, Control, Edit, CONTROL_API};
pub use error::ApiError;
pub use knobs::{FaultKind, FaultRule, Options, PushKnobs, QuotaKnobs};
pub use world::Counters;

/// The built-in service account's email.
pub const SERVICE_ACCOUNT: &str = "gcal-syncd@emulator-project.iam.gserviceaccount.com";
const KEY_ID: &str = "emulator-key-1";
const SERVICE_ACCOUNT_KEY: &str = include_str!("keys/service-account.pem");
const FOREIGN_KEY: &str = include_str!("keys/foreign.pem");

/// A running emulator. Dropping it does not stop it; call [`Emulator::shutdown`].
pub struct Emulator {
    control: Control,
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl std::ops::Deref for Emulator {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl Emulator {
    /// Serves the emulator on `listener` (bind port 0 in tests).
    pub async fn start(listener: TcpListener, opts: Options) -> std::io::Result<Emulator> {
        http::ensure_tls_provider();
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut world = world::World::new(opts, tx);
        world.token_url = format!("http://{addr}/token");
        world.api_root = format!("http://{addr}/calendar/v3");
        world.service_accounts.insert(
            SERVICE_ACCOUNT.to_string(),
            world::ServiceAccount {
                key_id: KEY_ID.into(),
                public_key: public_key(SERVICE_ACCOUNT_KEY),
                subjects: Default::default(),
            },
        );
        world.ensure_principal(SERVICE_ACCOUNT);
        let world = Arc::new(Mutex::new(world));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let server = server::Server {
            world: world.clone(),
            push_client: push::client(),
        };
        tasks.spawn(push::run(
            world.clone(),
            rx,
            server.push_client.clone(),
            tasks.clone(),
            stop.clone(),
        ));
        let handler = move |req| {
            let server = server.clone();
            async move { server.handle(req).await }
        };
        tasks.spawn(http::serve(listener, handler, stop.clone()));
        Ok(Emulator {
            control: Control { world },
            addr,
            stop,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Calendar API root: `http://IP:PORT/calendar/v3`.
    pub fn api_root(&self) -> String {
        format!("{}/calendar/v3", self.url())
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.url())
    }

    /// A service-account key file for the built-in account, with its
    /// `token_uri` on this emulator.
    pub fn service_account_json(&self) -> String {
        self.key_file(SERVICE_ACCOUNT_KEY)
    }

    /// The same account with a key the emulator does not know.
    pub fn foreign_service_account_json(&self) -> String {
        self.key_file(FOREIGN_KEY)
    }

    fn key_file(&self, pem: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "emulator-project",
            "private_key_id": KEY_ID,
            "private_key": pem,
            "client_email": SERVICE_ACCOUNT,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
        })
        .to_string()
    }

    /// Stops serving and delivering, and waits for in-flight work.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The PKCS#1 public key (DER) of an embedded PKCS#8 PEM key.
fn public_key(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("embedded key is valid base64");
    let pair =
        ring::signature::RsaKeyPair::from_pkcs8(&der).expect("embedded key is a valid RSA key");
    pair.public().as_ref().to_vec()
}

//! The local API on `api.listen`: health now; the change feed, calendars
//! and metrics arrive with the sync engine. Never mutates sync or channel
//! state.

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::http::{self, Response};
use crate::store::Store;

/// What the API handler reads.
#[derive(Clone)]
pub struct Api {
    store: Store,
}

impl Api {
    pub fn new(store: Store) -> Self {
        Api { store }
    }

    /// Routes one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => self.health(),
            (_, "/healthz") => http::error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            (_, path) => http::error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        }
    }

    fn health(&self) -> Response {
        let mut body = json!({ "status": "ok", "store": self.store.path().display().to_string() });
        if let Some(aside) = self.store.recovered_from() {
            body["store_recovered_from"] = json!(aside.display().to_string());
        }
        http::json(StatusCode::OK, &body)
    }
}

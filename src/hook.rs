//! The listener Google's push notifications arrive at (`hook.listen`).
//!
//! It answers `GET /healthz` for load balancers. Pings are checked against
//! the channels we created; until the channel scheduler exists there are
//! none, so every ping is for an unknown channel and gets 404, and nothing
//! is ever synced because of it. Never calls Google, never writes events.

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use crate::http::{self, Response};

/// The hook's routes.
#[derive(Clone)]
pub struct Hook {
    /// The path of `hook.public_url`, the only one pings are taken on.
    path: String,
}

impl Hook {
    pub fn new(path: &str) -> Self {
        Hook {
            path: path.to_string(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response {
        let path = req.uri().path();
        match *req.method() {
            Method::GET if path == "/healthz" => http::empty(StatusCode::OK),
            Method::POST if path == self.path => http::empty(StatusCode::NOT_FOUND),
            _ if path == self.path => http::empty(StatusCode::METHOD_NOT_ALLOWED),
            _ => http::empty(StatusCode::NOT_FOUND),
        }
    }
}

//! The HTTP/1 server both listeners run on (hyper 1, one task per
//! connection), hardened for the internet-facing hook: a header read timeout
//! (slowloris), a small header buffer, and a cap on concurrent connections
//! (per server: [`Limits::HOOK`], [`Limits::API`]). A socket waits for its
//! first byte before hyper's state is allocated, so idle ones stay cheap.
//! HTTP/1 only: hyper-util's auto builder sniffs the version without a
//! timeout. On stop it closes the listener and lets open connections finish
//! their request within [`DRAIN_LIMIT`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Response type of every handler: a whole body, or one streamed
/// ([`stream`]).
pub type Response = hyper::Response<Body>;

/// The body of a [`Response`].
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn whole(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// How long open connections get to finish after a stop.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

impl Limits {
    /// The internet-facing hook. Google's pings are a few headers and no
    /// body, sent at once, so 5 s cuts slow or idle sockets off early at no
    /// cost to Google; an open connection costs 10-15 KB (BENCHMARKS.md,
    /// "Listeners"), so thousands of them cannot crowd a ping out.
    pub const HOOK: Limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        max_connections: 8192,
    };
    /// The local API: long-polls hold a connection each (their number is
    /// capped apart, see `api`), so `/healthz` and `/metrics` keep room.
    pub const API: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        max_connections: 4096,
    };
}

/// Serves `handler` on `listener` until `stop` fires, then drains.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_backoff = Duration::from_millis(10);
    let (mut refused, mut last_warned) = (0u64, None);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => { accept_backoff = Duration::from_millis(10); conn }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            // Once a minute at most: a flood must not flood the journal too.
            if last_warned
                .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(60))
            {
                tracing::warn!(
                    server = name,
                    limit = limits.max_connections,
                    refused,
                    "connection limit reached; closing new connections unanswered"
                );
                last_warned = Some(std::time::Instant::now());
                refused = 0;
            }
            continue;
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
        });
        let watcher = graceful.watcher();
        let stop = stop.clone();
        tokio::spawn(async move {
            // A socket that sends nothing costs a task and the socket, not
            // hyper's buffers, and goes when the header timeout would end it.
            let accepted = tokio::time::Instant::now();
            let arrived = tokio::select! {
                _ = stop.cancelled() => false,
                r = tokio::time::timeout(limits.header_read_timeout, stream.readable()) => matches!(r, Ok(Ok(()))),
            };
            if arrived {
                // The headers get what is left of the timeout, not a new one.
                let left = limits
                    .header_read_timeout
                    .saturating_sub(accepted.elapsed())
                    .max(Duration::from_millis(100));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(left)
                    .max_buf_size(16 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                // Boxed: hyper's connection state is allocated only now, so
                // the waiting task above stays small.
                if let Err(e) = Box::pin(watcher.watch(conn)).await {
                    tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            server = name,
            "connections still open after the drain limit; closing them"
        );
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    json_text(status, body.to_string())
}

/// A response whose body is JSON text already.
pub fn json_text(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(whole(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A 200 JSON response whose body is sent as it is produced (chunked):
/// each `Ok` from `chunks` as it comes, until the sender is dropped. An
/// `Err` cuts the connection, so the client sees a truncated body (and
/// invalid JSON) rather than a complete-looking one.
pub fn stream(chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Response {
    struct Chunks(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);
    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|c| c.map(Frame::data)))
        }
    }
    let mut resp = Response::new(Chunks(chunks).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// An empty response with `status`.
pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(whole(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

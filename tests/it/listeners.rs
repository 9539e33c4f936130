//! The listeners cannot be locked from outside: a thousand slow or idle
//! sockets on the hook do not keep a genuine ping out, and pending
//! long-polls do not starve `/healthz`, `/metrics` or `status`.

use std::time::Duration;

use gcal_syncd::emulator::Edit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::emu::{self, event};
use crate::harness::{last_seq, Harness, Setup, CAL};

const WAIT: Duration = Duration::from_secs(60);

/// Opens `n` connections to `addr`, each having sent `prefix`.
async fn hold(addr: &str, n: usize, prefix: &str) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if !prefix.is_empty() {
            s.write_all(prefix.as_bytes()).await.expect("write");
        }
        out.push(s);
    }
    out
}

/// Sends `request` on a new connection and returns the status line's code.
async fn status_of(addr: &str, request: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_slow_or_idle_sockets_on_the_hook_do_not_keep_a_genuine_ping_out() {
    let h = Harness::start("slowloris", Setup::default()).await;
    let cal = h.wait_idle_with_token(WAIT).await;
    let seq = last_seq(&h.changes_after(0).await);
    let channel = emu::wait_until_async("a confirmed channel", WAIT, || async {
        let c = h.calendar().await;
        (c["channel"]["confirmed"] == true).then_some(c["channel"]["id"].clone())
    })
    .await;
    let id = channel.as_str().expect("channel id");
    let token = h.emu.channel_token(id).expect("token");

    let mut held = hold(&h.hook, 500, "").await;
    held.extend(
        hold(
            &h.hook,
            500,
            "POST /gcal/notify HTTP/1.1\r\nHost: x\r\nX-Goog-",
        )
        .await,
    );
    // A change Google announces while the sockets are held.
    h.emu
        .edit(CAL, Edit::Insert(event("behind the crowd", 2)), false)
        .await
        .expect("insert");
    let ping = format!(
        "POST /gcal/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Goog-Channel-ID: {id}\r\n\
         X-Goog-Channel-Token: {token}\r\nX-Goog-Resource-State: exists\r\nX-Goog-Message-Number: 9\r\n\
         X-Goog-Resource-ID: r\r\n\r\n"
    );
    assert_eq!(status_of(&h.hook, &ping).await, Some(200), "{cal}");
    let got = h
        .wait_changes("the pinged change", seq, WAIT, |c| !c.is_empty())
        .await;
    assert_eq!(got[0]["event"]["summary"], "behind the crowd");
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_long_polls_leave_room_for_healthz_metrics_and_status() {
    let h = Harness::start("long-polls", Setup::default()).await;
    h.wait_idle_with_token(WAIT).await;
    let head = last_seq(&h.changes_after(0).await);
    let poll = format!("GET /v1/changes?after={head}&wait=60 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut polls = hold(&h.api, gcal_syncd::api::MAX_WAITING, &poll).await;
    // One more than may wait: told to come back, not left hanging.
    let more = 8;
    polls.extend(hold(&h.api, more, &poll).await);
    for path in ["/healthz", "/metrics", "/v1/calendars"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status_of(&h.api, &req).await, Some(200), "{path}");
    }
    // The ones over the cap are answered 429 (with Retry-After), not left
    // hanging; the others are still waiting, so nothing else answers.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut s in polls {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256];
            if let Ok(n) = s.read(&mut buf).await {
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
    }
    for _ in 0..more {
        let answer = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a long-poll over the cap is answered")
            .expect("answer");
        assert!(
            answer.starts_with("HTTP/1.1 429")
                && answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
    }
    assert!(
        rx.try_recv().is_err(),
        "a long-poll under the cap was answered early"
    );
}

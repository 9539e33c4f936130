//! systemd service notifications (`Type=notify`) and the watchdog.
//!
//! Every function does nothing when the process was not started by systemd
//! (`NOTIFY_SOCKET` unset), so the daemon behaves the same under a shell.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Listeners are bound and the store is open.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration reload starts (systemd 253+ needs the monotonic time).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Graceful stop has begun.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pets the watchdog at half of `WATCHDOG_USEC` until `stop` fires. Returns
/// at once when systemd set no watchdog.
pub(crate) async fn watchdog(stop: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        // Nothing to do, but a watched task ends only at stop.
        return stop.cancelled().await;
    };
    let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
        }
    }
}

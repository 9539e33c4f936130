//! A sliding-minute limiter per account, so that many calendars of one
//! account stay under Google's per-user quota (600 requests a minute by
//! default). Waits instead of failing.
//!
//! A request is counted from when it is sent, Google counts it when it
//! arrives: with a window of exactly a minute, a request sent as the
//! oldest one leaves the daemon's window can still find it in Google's,
//! and gets 403 `userRateLimitExceeded`. The window is therefore a little
//! longer than Google's ([`SLACK`]), which costs 3% of the quota.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// More than a request's time on the wire, on any network that works.
const SLACK: Duration = Duration::from_secs(2);
/// Google's window is a minute; ours is longer by [`SLACK`].
const WINDOW: Duration = Duration::from_secs(60).saturating_add(SLACK);

pub(super) struct Limiter {
    per_minute: usize,
    /// Start times of the requests of the last minute. A tokio mutex: the
    /// waiting caller holds it, so callers queue in order.
    sent: Mutex<VecDeque<Instant>>,
}

impl Limiter {
    pub(super) fn new(per_minute: u32) -> Self {
        Limiter {
            per_minute: per_minute.max(1) as usize,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until one more request fits in the window, and counts it.
    pub(super) async fn acquire(&self) {
        let mut sent = self.sent.lock().await;
        loop {
            let now = Instant::now();
            while sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                sent.pop_front();
            }
            if sent.len() < self.per_minute {
                sent.push_back(now);
                return;
            }
            let oldest = *sent.front().expect("window is full, so not empty");
            tokio::time::sleep_until(oldest + WINDOW).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_request_over_the_limit_waits_for_the_window() {
        let limiter = Limiter::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        // Google's minute, and the slack for the request's way there.
        assert_eq!(start.elapsed(), Duration::from_secs(62));
    }
}

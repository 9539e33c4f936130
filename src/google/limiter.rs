//! A sliding-minute limiter per account, so that many calendars of one
//! account stay under Google's per-user quota (600 requests a minute by
//! default). Waits instead of failing.
//!
//! A request is counted from when it is sent, Google counts it when it
//! arrives: with a window of exactly a minute, a request sent as the
//! oldest one leaves the daemon's window can still find it in Google's,
//! and gets 403 `userRateLimitExceeded`. The window is therefore a little
//! longer than Google's ([`SLACK`]), which costs 3% of the quota.
//!
//! Urgent requests (those of an incremental pass a ping asked for) go
//! before background ones (full syncs, safety-net polls, channels):
//! background work may fill the window only up to [`RESERVE`] below the
//! limit, so an urgent request finds room at once even while thousands of
//! calendars start up, and each class waits in its own line. A request
//! waiting in the background line moves to the urgent one the moment its
//! calendar is pinged ([`Urgency::raise`]).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// More than a request's time on the wire, on any network that works.
const SLACK: Duration = Duration::from_secs(2);
/// Google's window is a minute; ours is longer by [`SLACK`].
const WINDOW: Duration = Duration::from_secs(60).saturating_add(SLACK);
/// The share of the window background requests leave to interactive ones
/// (at least one request): 30 a minute at Google's default of 600.
const RESERVE: f64 = 0.05;

/// Whether a calendar's requests are urgent: set by its engine for each
/// pass, raised by a ping during one.
#[derive(Debug, Default)]
pub struct Urgency {
    urgent: AtomicBool,
    raised: Notify,
}

impl Urgency {
    pub fn set(&self, urgent: bool) {
        self.urgent.store(urgent, Ordering::SeqCst);
        if urgent {
            self.raised.notify_waiters();
        }
    }

    /// A ping came: the calendar's requests, and the one waiting, are
    /// urgent from now on.
    pub fn raise(&self) {
        self.set(true);
    }

    /// Awaits `background`, unless the urgency is raised, now or while
    /// it waits: then `urgent` instead. `background` must be a wait that
    /// holds nothing when cancelled (a queue, a sleep).
    pub async fn race<T>(
        &self,
        background: impl Future<Output = T>,
        urgent: impl Future<Output = T>,
    ) -> T {
        let raised = self.raised.notified();
        tokio::pin!(raised);
        // Registered before the check, so a raise in between is seen.
        raised.as_mut().enable();
        if self.urgent.load(Ordering::SeqCst) {
            return urgent.await;
        }
        tokio::select! {
            t = background => t,
            () = raised => urgent.await,
        }
    }
}

pub(super) struct Limiter {
    per_minute: usize,
    /// How many requests background work may have in the window.
    background_max: usize,
    /// Start times of the requests of the window, oldest first.
    sent: std::sync::Mutex<VecDeque<Instant>>,
    /// One line per class. A tokio mutex: the caller at the head of the
    /// line holds it while it waits, so each line goes in order and at
    /// most two callers sleep on the window.
    lines: [Mutex<()>; 2],
}

impl Limiter {
    pub(super) fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1) as usize;
        let reserve = ((per_minute as f64 * RESERVE) as usize).max(1);
        Limiter {
            per_minute,
            background_max: per_minute.saturating_sub(reserve).max(1),
            sent: std::sync::Mutex::new(VecDeque::new()),
            lines: [Mutex::new(()), Mutex::new(())],
        }
    }

    /// Waits until one more request fits in the window, and counts it: a
    /// background one (`urgency` absent or not raised) leaves the
    /// reserve free, and moves to the urgent line when `urgency` is raised
    /// while it waits.
    pub(super) async fn acquire(&self, urgency: Option<&Urgency>) {
        // A request is counted synchronously as its wait completes, so
        // cancelling the background wait takes nothing from the window.
        match urgency {
            None => self.acquire_in(Class::Background).await,
            Some(u) => {
                u.race(
                    self.acquire_in(Class::Background),
                    self.acquire_in(Class::Urgent),
                )
                .await
            }
        }
    }

    /// How long `requests` background requests take at the most the
    /// window lets them through.
    pub(super) fn background_time(&self, requests: usize) -> Duration {
        WINDOW.mul_f64(requests as f64 / self.background_max as f64)
    }

    /// Requests counted in the window now.
    pub(super) fn in_window(&self) -> usize {
        let now = Instant::now();
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .filter(|t| now.duration_since(**t) < WINDOW)
            .count()
    }

    async fn acquire_in(&self, class: Class) {
        let (line, cap) = match class {
            Class::Urgent => (&self.lines[0], self.per_minute),
            Class::Background => (&self.lines[1], self.background_max),
        };
        let _head = line.lock().await;
        loop {
            let wake = {
                let now = Instant::now();
                // A poisoned lock still holds valid instants.
                let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
                while sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    sent.pop_front();
                }
                if sent.len() < cap {
                    sent.push_back(now);
                    return;
                }
                // Room for one more once all but cap - 1 have left.
                sent[sent.len() - cap] + WINDOW
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[derive(Clone, Copy)]
enum Class {
    Urgent,
    Background,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn background_time_counts_windows_of_the_background_share() {
        // 600 a minute: 570 for background work per 62 s window.
        let limiter = Limiter::new(600);
        assert_eq!(limiter.background_time(570), WINDOW);
        assert_eq!(limiter.background_time(10_000).as_secs(), 1087);
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_over_the_limit_waits_for_the_window() {
        let limiter = Limiter::new(3);
        let urgent = Urgency::default();
        urgent.raise();
        let start = Instant::now();
        limiter.acquire(None).await;
        limiter.acquire(None).await;
        limiter.acquire(Some(&urgent)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire(Some(&urgent)).await;
        // Google's minute, and the slack for the request's way there.
        assert_eq!(start.elapsed(), Duration::from_secs(62));
    }

    /// A start-up's worth of background requests, all waiting, and the
    /// time they all took.
    fn start_up(limiter: &Arc<Limiter>, n: usize) -> tokio::task::JoinHandle<Instant> {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                limiter.acquire(None).await;
            }
            Instant::now()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_leaves_room_for_a_ping() {
        let limiter = Arc::new(Limiter::new(600));
        let start = Instant::now();
        let background = start_up(&limiter, 2000);
        tokio::time::sleep(Duration::from_secs(90)).await;
        let asked = Instant::now();
        let urgent = Urgency::default();
        urgent.set(true);
        limiter.acquire(Some(&urgent)).await;
        assert_eq!(
            asked.elapsed(),
            Duration::ZERO,
            "the ping's request waits for nothing"
        );
        let done = background.await.expect("background");
        // 570 per window of 62 s: background used all it may.
        assert!(done.duration_since(start) < Duration::from_secs(62 * 4));
        assert!(done.duration_since(start) >= Duration::from_secs(62 * 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_in_the_background_line_goes_first_once_pinged() {
        let limiter = Arc::new(Limiter::new(600));
        let background = start_up(&limiter, 2000);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A poll's request, queued behind the start-up.
        let urgency = Arc::new(Urgency::default());
        let poll = tokio::spawn({
            let (limiter, urgency) = (limiter.clone(), urgency.clone());
            async move {
                limiter.acquire(Some(&urgency)).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!poll.is_finished(), "background waits behind the start-up");
        let pinged = Instant::now();
        urgency.raise();
        let sent = poll.await.expect("poll");
        assert_eq!(sent, pinged, "sent the moment its calendar was pinged");
        background.abort();
    }
}

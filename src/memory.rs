//! Gives freed heap back to the system. glibc keeps what a burst freed (a
//! start-up of thousands of calendars, a full sync, a big `/v1/calendars`
//! answer) resident in its arenas unless it lies at the very top of the
//! heap; `malloc_trim(0)` also returns the free pages inside them. Measured
//! at 10,000 idle calendars: 163 MB resident before, 114 MB after.
//!
//! [`trim`] is called where a burst ends: when start-up is done and after
//! every channel check (the periodic one, every 5 minutes by default, so
//! what API answers and syncs freed in between goes back then too). A trim
//! took 4 ms at 10,000 calendars and runs on a blocking thread. Elsewhere
//! than glibc it does nothing.

/// Returns the free pages of every arena now (on a blocking thread).
pub(crate) async fn trim() {
    let started = std::time::Instant::now();
    if tokio::task::spawn_blocking(trim_now).await.is_ok() {
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            "freed heap returned to the system"
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_now() {
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free
    // lists, under its locks; it takes no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_now() {}

//! Logging to stderr with tracing, shaped for journald.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with a syslog
//! priority prefix (`<6>`), which journald turns into the entry's priority
//! (so `journalctl -p warning` works), and has no timestamp (journald adds
//! one) and no colours. On a terminal the output is coloured; anywhere else
//! it is plain text with timestamps. Fields are `key=value`.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Changes the log filter of a running process (on SIGHUP).
#[derive(Clone)]
pub struct LogHandle {
    reload: Option<reload::Handle<Targets, tracing_subscriber::Registry>>,
    /// `RUST_LOG` was set: it wins over the config file, also on reload.
    env_override: bool,
}

impl LogHandle {
    /// Applies a new `log_level` from the configuration, unless `RUST_LOG`
    /// overrides it.
    pub fn set_level(&self, level: &str) {
        if self.env_override {
            return;
        }
        if let (Some(handle), Ok(targets)) = (&self.reload, parse_filter(level)) {
            if let Err(e) = handle.reload(targets) {
                tracing::warn!(error = %e, "cannot change the log level");
            }
        }
    }
}

/// A `Targets` filter with our noisy dependencies turned down.
fn parse_filter(level: &str) -> Result<Targets, String> {
    let mut targets: Targets = level.parse().map_err(|e| format!("{e}"))?;
    for noisy in [
        "tokio_cron_scheduler",
        "sled",
        "hyper",
        "rustls",
        "reqwest",
        "yup_oauth2",
    ] {
        if !level.contains(noisy) {
            targets = targets.with_target(noisy, Level::WARN);
        }
    }
    Ok(targets)
}

/// Installs the global subscriber. `level` comes from the config file (or
/// `info` when there is none); `RUST_LOG` overrides it. Calling it twice is
/// harmless (the second call only returns a handle that does nothing).
pub fn init(level: &str) -> LogHandle {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| parse_filter(v).is_ok());
    let targets = parse_filter(env.as_deref().unwrap_or(level))
        .unwrap_or_else(|_| Targets::new().with_default(Level::INFO));
    let (filter, handle) = reload::Layer::new(targets);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let terminal = std::io::stderr().is_terminal() && !journald;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .event_format(LineFormat {
            journald,
            inner: Format::default().with_ansi(terminal),
        });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok();
    LogHandle {
        reload: installed.then_some(handle),
        env_override: env.is_some(),
    }
}

/// The default full format, with a syslog priority prefix and no time under
/// journald.
struct LineFormat {
    journald: bool,
    inner: Format<Full, SystemTime>,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if !self.journald {
            return self.inner.format_event(ctx, writer, event);
        }
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner
            .clone()
            .without_time()
            .format_event(ctx, writer, event)
    }
}

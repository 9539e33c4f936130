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
use tracing_subscriber::filter::{LevelFilter, Targets};
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

/// Dependencies turned down to `warn` unless the filter names them.
const NOISY: &[&str] = &[
    "tokio_cron_scheduler",
    "sled",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "reqwest",
    "yup_oauth2",
];

/// Dependencies that log request headers, access tokens or the signed JWT
/// assertion at debug and trace: never more than `info`, whatever the
/// filter asks for, so that no secret reaches the log.
const SECRET_BEARING: &[&str] = &["yup_oauth2", "hyper", "hyper_util", "h2", "reqwest"];

/// Parses a log filter (`info`, `debug,sled=warn`) into the filter the
/// daemon installs: our noisy dependencies turned down, and the ones that
/// could log secrets capped at `info`. A bare word must be a level: a typo
/// such as `inof` would otherwise mean "only the target inof" and silence
/// everything.
pub fn parse_filter(level: &str) -> Result<Targets, String> {
    if level.trim().is_empty() {
        return Err("the filter is empty".into());
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && directive.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{directive:?} is not a level (off, error, warn, info, debug, trace) nor target=level"
            ));
        }
    }
    let parsed: Targets = level.parse().map_err(|e| format!("{e}"))?;
    let caps = |target: &str, wanted: LevelFilter| {
        let secret = SECRET_BEARING
            .iter()
            .any(|c| target == *c || target.starts_with(&format!("{c}::")));
        if secret {
            wanted.min(LevelFilter::INFO)
        } else {
            wanted
        }
    };
    let mut targets = Targets::new().with_targets(
        parsed
            .iter()
            .map(|(target, wanted)| (target.to_string(), caps(target, wanted))),
    );
    if let Some(default) = parsed.default_level() {
        targets = targets.with_default(default);
    }
    for noisy in NOISY {
        if !parsed.iter().any(|(t, _)| t == *noisy) {
            targets = targets.with_target(*noisy, caps(noisy, LevelFilter::WARN));
        }
    }
    Ok(targets)
}

/// Installs the global subscriber. `level` comes from the config file (or
/// `info` when there is none); `RUST_LOG` overrides it. Calling it twice is
/// harmless (the second call only returns a handle that does nothing).
pub fn init(level: &str) -> LogHandle {
    let raw_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let env_error = raw_env.as_deref().and_then(|v| parse_filter(v).err());
    let env = raw_env.clone().filter(|_| env_error.is_none());
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
    if let (Some(value), Some(error)) = (raw_env, env_error) {
        tracing::warn!(rust_log = %value, %error, "RUST_LOG ignored; using log_level from the configuration");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_word_must_be_a_level() {
        assert!(parse_filter("inof").is_err());
        assert!(parse_filter("info,sled").is_err());
        assert!(parse_filter(" ").is_err());
        for ok in ["info", "DEBUG", "warn,gcal_syncd::sync=debug", "off"] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn secret_bearing_dependencies_never_log_below_info() {
        let f = parse_filter("trace,yup_oauth2=trace,hyper::proto=debug").expect("filter");
        for target in ["yup_oauth2", "yup_oauth2::authenticator", "hyper::proto"] {
            assert!(!f.would_enable(target, &Level::DEBUG), "{target}");
            assert!(f.would_enable(target, &Level::INFO), "{target}");
        }
        // Not named: turned down to warn, although the default is trace.
        assert!(!f.would_enable("reqwest", &Level::INFO));
        assert!(f.would_enable("gcal_syncd::sync", &Level::TRACE));
        let quiet = parse_filter("info").expect("filter");
        assert!(!quiet.would_enable("sled", &Level::INFO));
        assert!(quiet.would_enable("gcal_syncd", &Level::INFO));
    }
}

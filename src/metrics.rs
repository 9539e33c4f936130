//! Prometheus metrics (OpenMetrics text on `GET /metrics`), one registry per
//! daemon. Names start with `gcal_syncd_` and carry their unit; the only
//! labels are bounded by the configuration (account, calendar) or by code
//! (state, outcome, kind, reason). A leaf module: it imports no other.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PingLabels {
    pub state: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub account: Arc<str>,
    pub calendar: Arc<str>,
    pub kind: &'static str,
    pub result: &'static str,
}

/// A calendar's labels. The strings are shared: a followed calendar has a
/// label set in several families, and thousands of calendars are followed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CalendarLabels {
    pub account: Arc<str>,
    pub calendar: Arc<str>,
}

impl CalendarLabels {
    pub fn new(account: &str, calendar: &str) -> Self {
        CalendarLabels {
            account: account.into(),
            calendar: calendar.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub sink: String,
    pub result: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of one daemon. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub pings: Family<PingLabels, Counter>,
    pub sync_passes: Family<PassLabels, Counter>,
    pub list_calls: Family<CalendarLabels, Counter>,
    pub list_items: Family<CalendarLabels, Counter>,
    pub change_records: Family<KindLabels, Counter>,
    pub google_errors: Family<ReasonLabels, Counter>,
    pub channel_renewals: Counter,
    pub channel_failures: Counter,
    pub last_success: Family<CalendarLabels, FloatGauge>,
    pub sync_lag: Family<CalendarLabels, FloatGauge>,
    pub sink_lag: Family<SinkLabels, Gauge>,
    pub sink_lag_seconds: Family<SinkLabels, FloatGauge>,
    pub sink_disabled: Family<SinkLabels, Gauge>,
    pub sink_deliveries: Family<DeliveryLabels, Counter>,
    pub channel_expiry: Family<CalendarLabels, FloatGauge>,
    pub quota_used: Family<AccountLabels, Gauge>,
    pub quota_limit: Family<AccountLabels, Gauge>,
    pub feed_head: Gauge,
    pub feed_pruned: Counter,
    pub feed_prune_passes: Counter,
    pub store_bytes: Gauge,
    pub store_failing: Gauge,
    pub store_write_failures: Counter,
    pub resident_bytes: Gauge,
    pub cpu_seconds: FloatGauge,
    pub start_time: FloatGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("gcal_syncd");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            pings: Family::default(),
            sync_passes: Family::default(),
            list_calls: Family::default(),
            list_items: Family::default(),
            change_records: Family::default(),
            google_errors: Family::default(),
            channel_renewals: Counter::default(),
            channel_failures: Counter::default(),
            last_success: Family::default(),
            sync_lag: Family::default(),
            sink_lag: Family::default(),
            sink_lag_seconds: Family::default(),
            sink_disabled: Family::default(),
            sink_deliveries: Family::default(),
            channel_expiry: Family::default(),
            quota_used: Family::default(),
            quota_limit: Family::default(),
            feed_head: Gauge::default(),
            feed_pruned: Counter::default(),
            feed_prune_passes: Counter::default(),
            store_bytes: Gauge::default(),
            store_failing: Gauge::default(),
            store_write_failures: Counter::default(),
            resident_bytes: Gauge::default(),
            cpu_seconds: FloatGauge::default(),
            start_time: FloatGauge::default(),
        };
        r.register("pings_received", "Push notifications received, by resource state and outcome (ok, sync, unknown, forbidden, bad)", m.pings.clone());
        r.register(
            "sync_passes",
            "Sync passes by calendar, kind (full, incremental, resync) and result",
            m.sync_passes.clone(),
        );
        r.register(
            "events_list_calls",
            "events.list calls made",
            m.list_calls.clone(),
        );
        r.register(
            "events_list_items",
            "Items returned by events.list",
            m.list_items.clone(),
        );
        r.register(
            "change_records",
            "Change records written to the feed, by kind",
            m.change_records.clone(),
        );
        r.register(
            "quota_requests",
            "Google requests of the account in the daemon's current quota window (a minute and 2 s)",
            m.quota_used.clone(),
        );
        r.register(
            "quota_requests_limit",
            "The account's requests_per_minute",
            m.quota_limit.clone(),
        );
        r.register(
            "google_errors",
            "Errors from Google, by reason",
            m.google_errors.clone(),
        );
        r.register(
            "channel_renewals",
            "Watch channels created to replace an expiring one",
            m.channel_renewals.clone(),
        );
        r.register(
            "channel_failures",
            "Failed events.watch or channels.stop calls",
            m.channel_failures.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful sync pass",
            m.last_success.clone(),
        );
        r.register(
            "sync_lag_seconds",
            "Seconds since the last successful sync pass",
            m.sync_lag.clone(),
        );
        r.register(
            "sink_lag_records",
            "Records published but not yet acknowledged by the sink",
            m.sink_lag.clone(),
        );
        r.register(
            "sink_lag_seconds",
            "Seconds since the oldest record the sink has not acknowledged was detected",
            m.sink_lag_seconds.clone(),
        );
        r.register(
            "sink_disabled",
            "1 while the sink is disabled (410 Gone or max_lag) until reset",
            m.sink_disabled.clone(),
        );
        r.register(
            "sink_deliveries",
            "Delivery attempts to a sink, by result (ok, failed, gone)",
            m.sink_deliveries.clone(),
        );
        r.register(
            "channel_expiry_timestamp_seconds",
            "Unix time the calendar's live channel expires",
            m.channel_expiry.clone(),
        );
        r.register(
            "feed_head_seq",
            "Highest seq in the change feed",
            m.feed_head.clone(),
        );
        r.register(
            "feed_pruned_records",
            "Change records removed by feed.retention",
            m.feed_pruned.clone(),
        );
        r.register(
            "feed_retention_passes",
            "Times the feed writer looked for records older than feed.retention",
            m.feed_prune_passes.clone(),
        );
        r.register(
            "store_size_bytes",
            "Size of the store on disk",
            m.store_bytes.clone(),
        );
        r.register(
            "store_write_failing",
            "1 while the store cannot be written (the feed is paused), else 0",
            m.store_failing.clone(),
        );
        r.register(
            "store_write_failures",
            "Page writes the store refused (a full disk, an I/O error)",
            m.store_write_failures.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the daemon",
            m.resident_bytes.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time used by the daemon (user + system)",
            m.cpu_seconds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Unix time the daemon started",
            m.start_time.clone(),
        );
        m.start_time
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        read_process(self);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn ping(&self, state: &str, outcome: &'static str) {
        // Unknown states are folded into one label value (bounded cardinality).
        let state = match state {
            "sync" | "exists" | "not_exists" => state.to_string(),
            _ => "other".to_string(),
        };
        self.pings
            .get_or_create(&PingLabels { state, outcome })
            .inc();
    }
}

/// Resident memory and CPU time from /proc/self (Linux).
fn read_process(m: &Metrics) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        {
            m.resident_bytes.set(kb * 1024);
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat, 11 and 12 after ')'.
        m.cpu_seconds.set((ticks(11) + ticks(12)) / 100.0);
    }
}

//! Prometheus metrics (OpenMetrics text on `GET /metrics`), one registry per
//! daemon. Names start with `gcal_syncd_` and carry their unit; the only
//! labels are bounded by the configuration (account, calendar) or by code
//! (state, outcome, kind, reason). A leaf module: it imports no other.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PingLabels {
    pub state: String,
    pub outcome: &'static str,
}

/// What a calendar's engine counted since start. Plain integers in the
/// engine's status entry rather than a label set in each of several
/// families: those cost about 0.8 KB per calendar (heaptrack, 10,000
/// calendars), these 40 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CalendarCounts {
    pub list_calls: u64,
    pub list_items: u64,
    /// Successful passes, by kind.
    pub incremental: u64,
    pub full: u64,
    pub resync: u64,
    /// Passes that failed (of any kind).
    pub failed: u64,
}

/// One calendar's series, gathered when `/metrics` is scraped.
#[derive(Clone, Debug, Default)]
pub struct CalendarSample {
    pub account: String,
    pub calendar: String,
    pub counts: CalendarCounts,
    /// Unix seconds of the last successful pass, and seconds since.
    pub last_success: Option<f64>,
    pub sync_lag: Option<f64>,
    /// Unix seconds the calendar's live channel expires.
    pub channel_expiry: Option<f64>,
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
    pub change_records: Family<KindLabels, Counter>,
    pub google_errors: Family<ReasonLabels, Counter>,
    pub channel_renewals: Counter,
    pub channel_failures: Counter,
    pub sink_lag: Family<SinkLabels, Gauge>,
    pub sink_lag_seconds: Family<SinkLabels, FloatGauge>,
    pub sink_disabled: Family<SinkLabels, Gauge>,
    pub sink_deliveries: Family<DeliveryLabels, Counter>,
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
            change_records: Family::default(),
            google_errors: Family::default(),
            channel_renewals: Counter::default(),
            channel_failures: Counter::default(),
            sink_lag: Family::default(),
            sink_lag_seconds: Family::default(),
            sink_disabled: Family::default(),
            sink_deliveries: Family::default(),
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

    /// The OpenMetrics text of every metric, the per-calendar ones from
    /// `calendars` (made for this scrape and dropped after it).
    pub fn render(&self, calendars: Vec<CalendarSample>) -> String {
        use prometheus_client::encoding::text;
        read_process(self);
        let mut scrape = Registry::with_prefix("gcal_syncd");
        scrape.register_collector(Box::new(PerCalendar(calendars)));
        let mut out = String::new();
        let encoded = text::encode_registry(&mut out, &self.registry)
            .and_then(|()| text::encode_registry(&mut out, &scrape))
            .and_then(|()| text::encode_eof(&mut out));
        if encoded.is_err() {
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

/// The per-calendar families of one scrape.
#[derive(Debug)]
struct PerCalendar(Vec<CalendarSample>);

impl PerCalendar {
    fn family(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        value: impl Fn(&CalendarSample) -> Option<f64>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for s in &self.0 {
            let Some(v) = value(s) else { continue };
            let labels = [
                ("account", s.account.as_str()),
                ("calendar", s.calendar.as_str()),
            ];
            let metric = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(v as u64).encode(metric)?,
                _ => ConstGauge::new(v).encode(metric)?,
            }
        }
        Ok(())
    }
}

impl Collector for PerCalendar {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "sync_passes",
                "Sync passes by calendar, kind (full, incremental, resync) and result",
                None,
                MetricType::Counter,
            )?;
            for s in &self.0 {
                let c = &s.counts;
                let kinds = [
                    ("incremental", "ok", c.incremental),
                    ("full", "ok", c.full),
                    ("resync", "ok", c.resync),
                    ("any", "error", c.failed),
                ];
                for (kind, result, n) in kinds.into_iter().filter(|k| k.2 > 0) {
                    let labels = [
                        ("account", s.account.as_str()),
                        ("calendar", s.calendar.as_str()),
                        ("kind", kind),
                        ("result", result),
                    ];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;
        let f = |v: u64| Some(v as f64);
        self.family(
            &mut encoder,
            ("events_list_calls", "events.list calls made", counter),
            |s| f(s.counts.list_calls),
        )?;
        self.family(
            &mut encoder,
            (
                "events_list_items",
                "Items returned by events.list",
                counter,
            ),
            |s| f(s.counts.list_items),
        )?;
        self.family(
            &mut encoder,
            (
                "last_success_timestamp_seconds",
                "Unix time of the last successful sync pass",
                gauge,
            ),
            |s| s.last_success,
        )?;
        self.family(
            &mut encoder,
            (
                "sync_lag_seconds",
                "Seconds since the last successful sync pass",
                gauge,
            ),
            |s| s.sync_lag,
        )?;
        self.family(
            &mut encoder,
            (
                "channel_expiry_timestamp_seconds",
                "Unix time the calendar's live channel expires",
                gauge,
            ),
            |s| s.channel_expiry,
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_calendar_series_come_from_the_samples_of_the_scrape() {
        let m = Metrics::new();
        let synced = CalendarSample {
            account: "a".into(),
            calendar: "room\"1".into(),
            counts: CalendarCounts {
                list_calls: 3,
                list_items: 12,
                full: 1,
                incremental: 2,
                ..CalendarCounts::default()
            },
            last_success: Some(1.9e9),
            sync_lag: Some(4.5),
            channel_expiry: Some(2.0e9),
        };
        let new = CalendarSample {
            account: "a".into(),
            calendar: "new".into(),
            ..CalendarSample::default()
        };
        let text = m.render(vec![synced, new]);
        let lines: Vec<&str> = text.lines().collect();
        let room = r#"account="a",calendar="room\"1""#;
        for want in [
            format!(r#"gcal_syncd_sync_passes_total{{{room},kind="incremental",result="ok"}} 2"#),
            format!(r#"gcal_syncd_sync_passes_total{{{room},kind="full",result="ok"}} 1"#),
            format!("gcal_syncd_events_list_calls_total{{{room}}} 3"),
            format!("gcal_syncd_events_list_items_total{{{room}}} 12"),
            format!("gcal_syncd_last_success_timestamp_seconds{{{room}}} 1900000000.0"),
            format!("gcal_syncd_sync_lag_seconds{{{room}}} 4.5"),
            format!("gcal_syncd_channel_expiry_timestamp_seconds{{{room}}} 2000000000.0"),
            r#"gcal_syncd_events_list_calls_total{account="a",calendar="new"} 0"#.into(),
            "# TYPE gcal_syncd_sync_lag_seconds gauge".into(),
        ] {
            assert!(
                lines.contains(&want.as_str()),
                "{want} missing from:\n{text}"
            );
        }
        // What did not happen has no series; the text ends once.
        assert!(!text.contains(r#"kind="resync""#) && !text.contains(r#"result="error""#));
        let new_series = lines.iter().filter(|l| l.contains(r#"calendar="new""#));
        assert_eq!(new_series.count(), 2, "only its two list counters: {text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}

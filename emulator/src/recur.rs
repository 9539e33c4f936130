//! Recurrence: the subset of RFC 5545 the emulator expands exactly
//! (RRULE with FREQ=DAILY/WEEKLY/MONTHLY, COUNT, UNTIL, INTERVAL, BYDAY,
//! WKST; RDATE; EXDATE), in the zone of the series' start. Anything else is
//! refused with a message, never expanded wrongly.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// Instances generated for one series at most (bounds work on open series).
pub(super) const MAX_INSTANCES: usize = 3000;

/// The start of an event: a whole day, or an instant with its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum When {
    Date(NaiveDate),
    At(DateTime<Utc>),
}

impl When {
    /// The instance-id suffix: `20261201T100000Z` or `20261201`.
    pub(super) fn id_suffix(&self) -> String {
        match self {
            When::Date(d) => d.format("%Y%m%d").to_string(),
            When::At(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
        }
    }

    /// Start of the day or the instant, in UTC (for ordering and windows).
    pub(super) fn utc(&self) -> DateTime<Utc> {
        match self {
            When::Date(d) => Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN)),
            When::At(t) => *t,
        }
    }
}

/// A series' first start: the wall-clock time it repeats at, and its zone.
#[derive(Debug, Clone, Copy)]
pub(super) enum SeriesStart {
    Date(NaiveDate),
    Local(NaiveDateTime, Tz),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freq {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone)]
struct Rule {
    freq: Freq,
    interval: u32,
    count: Option<u32>,
    until: Option<When>,
    /// (ordinal, weekday); ordinal only with MONTHLY.
    by_day: Vec<(Option<i32>, Weekday)>,
    wkst: Weekday,
}

/// A parsed `recurrence[]`.
#[derive(Debug, Clone)]
pub(super) struct Series {
    start: SeriesStart,
    rules: Vec<Rule>,
    rdates: Vec<When>,
    exdates: Vec<When>,
}

impl Series {
    /// Parses the lines of `recurrence[]` for a series starting at `start`.
    pub(super) fn parse(lines: &[String], start: SeriesStart) -> Result<Series, String> {
        let mut series = Series {
            start,
            rules: Vec::new(),
            rdates: Vec::new(),
            exdates: Vec::new(),
        };
        for line in lines {
            let (head, value) = line
                .split_once(':')
                .ok_or_else(|| format!("invalid recurrence line {line:?}"))?;
            let mut params = head.split(';');
            let name = params.next().unwrap_or("").to_ascii_uppercase();
            let params: Vec<&str> = params.collect();
            match name.as_str() {
                "RRULE" if params.is_empty() => series.rules.push(parse_rule(value, start)?),
                "RDATE" => series.rdates.extend(parse_dates(value, &params, start)?),
                "EXDATE" => series.exdates.extend(parse_dates(value, &params, start)?),
                "EXRULE" => return Err("EXRULE is not supported by the emulator".into()),
                "DTSTART" | "DTEND" => {
                    return Err(format!(
                        "{name} is not allowed in recurrence; use start/end"
                    ))
                }
                _ => return Err(format!("unsupported recurrence line {line:?}")),
            }
        }
        if series.rules.is_empty() && series.rdates.is_empty() {
            return Err("recurrence needs an RRULE or RDATE".into());
        }
        if series.rules.len() > 1 {
            return Err("more than one RRULE is not supported by the emulator".into());
        }
        Ok(series)
    }

    /// Occurrence starts, ascending, at most [`MAX_INSTANCES`], none after
    /// `horizon`.
    pub(super) fn occurrences(&self, horizon: DateTime<Utc>) -> Vec<When> {
        let first = self.first();
        let mut out = vec![first];
        if let Some(rule) = self.rules.first() {
            let mut produced = 1u32;
            for w in rule_iter(rule, self.start) {
                if w.utc() > horizon || out.len() >= MAX_INSTANCES {
                    break;
                }
                if rule.until.is_some_and(|u| w.utc() > u.utc()) {
                    break;
                }
                if rule.count.is_some_and(|c| produced >= c) {
                    break;
                }
                if w > first {
                    out.push(w);
                    produced += 1;
                }
            }
        }
        out.extend(self.rdates.iter().copied().filter(|w| w.utc() <= horizon));
        out.sort();
        out.dedup();
        out.retain(|w| !self.exdates.contains(w));
        out.truncate(MAX_INSTANCES);
        out
    }

    /// Whether `when` is an occurrence (up to `horizon`).
    pub(super) fn contains(&self, when: When, horizon: DateTime<Utc>) -> bool {
        self.occurrences(horizon.max(when.utc())).contains(&when)
    }

    fn first(&self) -> When {
        match self.start {
            SeriesStart::Date(d) => When::Date(d),
            SeriesStart::Local(t, tz) => When::At(local_to_utc(t, tz)),
        }
    }
}

/// A local wall time in `tz` as UTC (a skipped hour moves forward one hour,
/// a repeated hour takes its first occurrence).
pub(super) fn local_to_utc(t: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&t).earliest() {
        Some(dt) => dt.with_timezone(&Utc),
        None => tz
            .from_local_datetime(&(t + Duration::hours(1)))
            .earliest()
            .map_or_else(|| Utc.from_utc_datetime(&t), |dt| dt.with_timezone(&Utc)),
    }
}

fn parse_rule(value: &str, start: SeriesStart) -> Result<Rule, String> {
    let mut rule = Rule {
        freq: Freq::Daily,
        interval: 1,
        count: None,
        until: None,
        by_day: Vec::new(),
        wkst: Weekday::Mon,
    };
    let mut freq = None;
    for part in value.split(';') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid RRULE part {part:?}"))?;
        match k.to_ascii_uppercase().as_str() {
            "FREQ" => {
                freq = Some(match v.to_ascii_uppercase().as_str() {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    other => return Err(format!("FREQ={other} is not supported by the emulator")),
                })
            }
            "INTERVAL" => {
                rule.interval = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("invalid INTERVAL")?
            }
            "COUNT" => {
                rule.count = Some(v.parse().ok().filter(|n| *n >= 1).ok_or("invalid COUNT")?)
            }
            "UNTIL" => rule.until = Some(parse_value(v, None, start)?),
            "BYDAY" => {
                for d in v.split(',') {
                    rule.by_day.push(parse_by_day(d)?);
                }
            }
            "WKST" => rule.wkst = parse_weekday(v)?,
            other => {
                return Err(format!(
                    "RRULE part {other} is not supported by the emulator"
                ))
            }
        }
    }
    rule.freq = freq.ok_or("RRULE needs FREQ")?;
    if rule.count.is_some() && rule.until.is_some() {
        return Err("RRULE may not have both COUNT and UNTIL".into());
    }
    if rule.freq != Freq::Monthly && rule.by_day.iter().any(|(n, _)| n.is_some()) {
        return Err("BYDAY with an ordinal is only supported with FREQ=MONTHLY".into());
    }
    Ok(rule)
}

fn parse_by_day(text: &str) -> Result<(Option<i32>, Weekday), String> {
    let text = text.trim();
    let split = text
        .len()
        .checked_sub(2)
        .ok_or_else(|| format!("invalid BYDAY {text:?}"))?;
    let (ord, day) = text.split_at(split);
    let ord = if ord.is_empty() {
        None
    } else {
        let n: i32 = ord.parse().map_err(|_| format!("invalid BYDAY {text:?}"))?;
        if n == 0 || n.abs() > 5 {
            return Err(format!("invalid BYDAY ordinal in {text:?}"));
        }
        Some(n)
    };
    Ok((ord, parse_weekday(day)?))
}

fn parse_weekday(text: &str) -> Result<Weekday, String> {
    Ok(match text.to_ascii_uppercase().as_str() {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        other => return Err(format!("invalid weekday {other:?}")),
    })
}

/// RDATE/EXDATE values: `VALUE=DATE` dates, UTC `...Z` times, or local times
/// in `TZID` (default: the series' zone).
fn parse_dates(value: &str, params: &[&str], start: SeriesStart) -> Result<Vec<When>, String> {
    let mut tzid = None;
    for p in params {
        match p.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("TZID") => {
                tzid = Some(v.parse::<Tz>().map_err(|_| format!("unknown TZID {v:?}"))?)
            }
            Some((k, v))
                if k.eq_ignore_ascii_case("VALUE") && (v == "DATE" || v == "DATE-TIME") => {}
            _ => return Err(format!("unsupported parameter {p:?}")),
        }
    }
    value
        .split(',')
        .map(|v| parse_value(v.trim(), tzid, start))
        .collect()
}

fn parse_value(v: &str, tzid: Option<Tz>, start: SeriesStart) -> Result<When, String> {
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y%m%d") {
        return Ok(match start {
            SeriesStart::Date(_) => When::Date(d),
            // A date bound on a timed series: the end of that day, locally.
            SeriesStart::Local(_, tz) => When::At(local_to_utc(
                d.and_hms_opt(23, 59, 59).unwrap_or_default(),
                tz,
            )),
        });
    }
    if let Some(utc) = v.strip_suffix('Z') {
        let t = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
            .map_err(|_| format!("invalid date-time {v:?}"))?;
        return Ok(match start {
            SeriesStart::Date(_) => When::Date(t.date()),
            SeriesStart::Local(..) => When::At(Utc.from_utc_datetime(&t)),
        });
    }
    let t = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
        .map_err(|_| format!("invalid date-time {v:?}"))?;
    Ok(match start {
        SeriesStart::Date(_) => When::Date(t.date()),
        SeriesStart::Local(_, tz) => When::At(local_to_utc(t, tzid.unwrap_or(tz))),
    })
}

/// Candidate occurrences of `rule` from the series start on, ascending.
fn rule_iter(rule: &Rule, start: SeriesStart) -> impl Iterator<Item = When> + '_ {
    let (date0, time, tz) = match start {
        SeriesStart::Date(d) => (d, None, None),
        SeriesStart::Local(t, tz) => (t.date(), Some(t.time()), Some(tz)),
    };
    let to_when = move |d: NaiveDate| match (time, tz) {
        (Some(t), Some(tz)) => When::At(local_to_utc(d.and_time(t), tz)),
        _ => When::Date(d),
    };
    periods(rule, date0)
        .flat_map(move |days| days.into_iter().filter(move |d| *d >= date0).map(to_when))
}

/// Each period's dates (a day, a week, a month), ascending, endless.
fn periods(rule: &Rule, date0: NaiveDate) -> Box<dyn Iterator<Item = Vec<NaiveDate>> + '_> {
    let step = i64::from(rule.interval);
    match rule.freq {
        Freq::Daily => Box::new(
            (0..)
                .map_while(move |i| date0.checked_add_signed(Duration::days(i * step)))
                .map(move |d| {
                    if rule.by_day.is_empty() || rule.by_day.iter().any(|(_, w)| *w == d.weekday())
                    {
                        vec![d]
                    } else {
                        vec![]
                    }
                }),
        ),
        Freq::Weekly => {
            let back =
                (7 + date0.weekday().num_days_from_monday() - rule.wkst.num_days_from_monday()) % 7;
            let week0 = date0 - Duration::days(i64::from(back));
            let days: Vec<Weekday> = if rule.by_day.is_empty() {
                vec![date0.weekday()]
            } else {
                rule.by_day.iter().map(|(_, w)| *w).collect()
            };
            Box::new(
                (0..)
                    .map_while(move |i| week0.checked_add_signed(Duration::weeks(i * step)))
                    .map(move |week| {
                        let mut out: Vec<NaiveDate> = (0..7)
                            .map(|k| week + Duration::days(k))
                            .filter(|d| days.contains(&d.weekday()))
                            .collect();
                        out.sort();
                        out
                    }),
            )
        }
        Freq::Monthly => Box::new((0..).map(move |i| {
            let months = i64::from(date0.month0()) + i * step;
            let (year, month) = (
                date0.year() + (months / 12) as i32,
                (months % 12) as u32 + 1,
            );
            month_days(rule, date0, year, month)
        })),
    }
}

fn month_days(rule: &Rule, date0: NaiveDate, year: i32, month: u32) -> Vec<NaiveDate> {
    let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else {
        return vec![];
    };
    if rule.by_day.is_empty() {
        return NaiveDate::from_ymd_opt(year, month, date0.day())
            .into_iter()
            .collect();
    }
    let days: Vec<NaiveDate> = first
        .iter_days()
        .take_while(|d| d.month() == month)
        .collect();
    let mut out = Vec::new();
    for (ord, wd) in &rule.by_day {
        let matching: Vec<NaiveDate> = days
            .iter()
            .copied()
            .filter(|d| d.weekday() == *wd)
            .collect();
        match ord {
            None => out.extend(matching),
            Some(n) if *n > 0 => out.extend(matching.get(*n as usize - 1)),
            Some(n) => out.extend(
                matching
                    .len()
                    .checked_sub(n.unsigned_abs() as usize)
                    .and_then(|i| matching.get(i)),
            ),
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str, tz: &str) -> SeriesStart {
        SeriesStart::Local(
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap(),
            tz.parse().unwrap(),
        )
    }

    fn ids(series: &Series) -> Vec<String> {
        let horizon = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        series
            .occurrences(horizon)
            .iter()
            .map(When::id_suffix)
            .collect()
    }

    #[test]
    fn weekly_byday_count_across_dst_keeps_local_time() {
        let s = Series::parse(
            &["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4".into()],
            local("2026-10-21T09:00:00", "Europe/Berlin"),
        )
        .unwrap();
        // Wed 21 Oct (CEST, UTC+2), Mon 26 Oct (CET, UTC+1), Wed 28, Mon 2 Nov.
        assert_eq!(
            ids(&s),
            [
                "20261021T070000Z",
                "20261026T080000Z",
                "20261028T080000Z",
                "20261102T080000Z"
            ]
        );
    }

    #[test]
    fn monthly_last_friday_until_and_exdate() {
        let lines = vec![
            "RRULE:FREQ=MONTHLY;BYDAY=-1FR;UNTIL=20270331T000000Z".to_string(),
            "EXDATE;TZID=UTC:20270129T120000".to_string(),
        ];
        let s = Series::parse(&lines, local("2026-11-27T12:00:00", "UTC")).unwrap();
        assert_eq!(
            ids(&s),
            [
                "20261127T120000Z",
                "20261225T120000Z",
                "20270226T120000Z",
                "20270326T120000Z"
            ]
        );
    }

    #[test]
    fn daily_all_day_with_interval_and_rdate() {
        let start = SeriesStart::Date(NaiveDate::from_ymd_opt(2026, 1, 30).unwrap());
        let s = Series::parse(
            &[
                "RRULE:FREQ=DAILY;INTERVAL=2;COUNT=3".into(),
                "RDATE;VALUE=DATE:20260210".into(),
            ],
            start,
        )
        .unwrap();
        assert_eq!(ids(&s), ["20260130", "20260201", "20260203", "20260210"]);
    }

    #[test]
    fn monthly_on_the_31st_skips_short_months() {
        let s = Series::parse(
            &["RRULE:FREQ=MONTHLY;COUNT=3".into()],
            local("2026-01-31T10:00:00", "UTC"),
        )
        .unwrap();
        assert_eq!(
            ids(&s),
            ["20260131T100000Z", "20260331T100000Z", "20260531T100000Z"]
        );
    }

    #[test]
    fn unsupported_rules_are_refused_with_a_reason() {
        let start = local("2026-01-01T10:00:00", "UTC");
        for (line, want) in [
            ("RRULE:FREQ=YEARLY", "FREQ=YEARLY"),
            ("RRULE:FREQ=MONTHLY;BYMONTHDAY=1", "BYMONTHDAY"),
            ("EXRULE:FREQ=DAILY", "EXRULE"),
            (
                "RRULE:FREQ=DAILY;COUNT=2;UNTIL=20260105",
                "both COUNT and UNTIL",
            ),
        ] {
            let err = Series::parse(&[line.to_string()], start).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}

//! Event times relative to today's clock, for the demo, the tests and the
//! benches, so that nothing they send ages (Google refuses `updatedMin` more
//! than 30 days back, and open series expand from the present).
//!
//! Series in a named time zone start on [`winter_monday`], a date that is
//! always in standard time in both Europe and North America, so the UTC
//! hour of an instance (and so its id) is known without a zone table.

use chrono::{Datelike, Duration, NaiveDate, Utc, Weekday};

/// Today's UTC date `days` from now.
pub fn date(days: i64) -> NaiveDate {
    Utc::now().date_naive() + Duration::days(days)
}

/// `YYYY-MM-DDTHH:MM:00Z`, `days` from today at `hour:minute` UTC.
pub fn utc(days: i64, hour: u32, minute: u32) -> String {
    at(date(days), hour, minute) + "Z"
}

/// `YYYY-MM-DDTHH:MM:00` (no offset) on `day`.
pub fn at(day: NaiveDate, hour: u32, minute: u32) -> String {
    format!("{}T{hour:02}:{minute:02}:00", day.format("%Y-%m-%d"))
}

/// The first Monday at least a week ahead that falls in December or
/// January. Three weeks from it are still standard time in Europe (until
/// the last Sunday of March) and the US (until the second Sunday of March):
/// Europe/Berlin is UTC+1 and America/New_York UTC-5 on all of them.
pub fn winter_monday() -> NaiveDate {
    let mut d = date(7);
    while d.weekday() != Weekday::Mon || !matches!(d.month(), 12 | 1) {
        d += Duration::days(1);
    }
    d
}

/// The id suffix of a series instance starting `days` after `start` at
/// `hour` UTC: `_YYYYMMDDTHHMMSSZ`.
pub fn instance_suffix(start: NaiveDate, days: i64, hour_utc: u32) -> String {
    let day = start + Duration::days(days);
    format!("_{}T{hour_utc:02}0000Z", day.format("%Y%m%d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winter_monday_is_a_monday_in_standard_time_and_ahead() {
        let d = winter_monday();
        assert_eq!(d.weekday(), Weekday::Mon);
        assert!(matches!(d.month(), 12 | 1));
        assert!(d >= date(7) && d < date(7 + 366));
    }

    #[test]
    fn instance_suffix_has_googles_shape() {
        let d = NaiveDate::from_ymd_opt(2030, 12, 2).unwrap_or_default();
        assert_eq!(instance_suffix(d, 2, 8), "_20301204T080000Z");
    }
}

//! [`Timestamp`]: a wall-clock time as the store keeps it and the API
//! serves it, a `chrono` UTC time written as RFC 3339 with milliseconds
//! and `Z` (`2026-11-27T10:15:03.001Z`, the feed's `detected_at`). Parsed
//! once where it is read, compared and subtracted as a time everywhere else.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC time to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Now, to the millisecond (so what is stored is what is served).
    pub fn now() -> Timestamp {
        Timestamp::from(Utc::now())
    }

    /// Milliseconds since the epoch (how Google gives a channel's
    /// expiration); `None` when out of chrono's range.
    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        DateTime::from_timestamp_millis(ms).map(Timestamp)
    }

    /// Any RFC 3339 time, kept in UTC to the millisecond.
    pub fn parse(s: &str) -> Result<Timestamp, chrono::ParseError> {
        DateTime::parse_from_rfc3339(s).map(|t| Timestamp::from(t.with_timezone(&Utc)))
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    /// Cut to the millisecond.
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(t.trunc_subsecs(3))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Timestamp::parse(&s)
            .map_err(|e| serde::de::Error::custom(format_args!("time {s:?} is not RFC 3339: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_with_milliseconds_and_z_and_read_back_from_any_offset() {
        let t = Timestamp::parse("2026-11-27T11:15:03.001+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T10:15:03.001Z");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-27T10:15:03.001Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        let whole = Timestamp::parse("2026-11-27T10:15:03Z").unwrap();
        assert_eq!(whole.to_string(), "2026-11-27T10:15:03.000Z");
        assert!(whole < t);
        let fine = Timestamp::parse("2026-11-27T10:15:03.001999Z").unwrap();
        assert_eq!(
            fine, t,
            "cut to the millisecond, so what is stored is what is served"
        );
    }

    #[test]
    fn a_bad_time_is_an_error_that_names_it() {
        let e = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(e.to_string().contains("\"yesterday\""), "{e}");
        assert_eq!(
            Timestamp::now().as_datetime().timestamp_subsec_nanos() % 1_000_000,
            0
        );
    }
}

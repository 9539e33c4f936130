//! The local API's query strings: percent-decoded, repeatable where a
//! parameter may be, checked, with a clear message for anything else.

use std::time::Duration;

use crate::store::{CalendarKey, Filter, Seq};

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;
const MAX_WAIT_SECS: u64 = 60;

/// A query string's parameters, in order, percent-decoded (calendar ids
/// hold `@` and `#`).
pub(super) struct Query(Vec<(String, String)>);

pub(super) fn parse_query(q: Option<&str>) -> Query {
    Query(
        form_urlencoded::parse(q.unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
    )
}

impl Query {
    /// Err naming the first parameter not in `known`.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(format!("unknown parameter {k:?}; use {}", known.join(", "))),
            None => Ok(()),
        }
    }

    /// The value of a parameter given at most once.
    fn one<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, String> {
        let mut values = self.all(name);
        match (values.next(), values.next()) {
            (v, None) => Ok(v),
            (Some(_), Some(_)) => Err(format!("{name} is given more than once")),
            (None, Some(_)) => unreachable!("an iterator resumed after None"),
        }
    }

    /// Every value of a repeatable parameter.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `after`, `limit`, `wait` and the filters of `/v1/changes`, checked.
#[derive(Debug)]
pub(super) struct ChangesQuery {
    pub(super) after: Seq,
    pub(super) limit: usize,
    pub(super) wait: Duration,
    pub(super) filter: Filter,
}

impl ChangesQuery {
    pub(super) fn parse(q: &Query) -> Result<ChangesQuery, String> {
        q.only(&["after", "limit", "wait", "account", "calendar_id"])?;
        let num = |name: &str, default: u64| -> Result<u64, String> {
            match q.one(name)? {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| format!("{name} must be a non-negative integer, got {v:?}")),
            }
        };
        let after = num("after", 0)?;
        let limit = num("limit", DEFAULT_LIMIT as u64)?;
        if !(1..=MAX_LIMIT as u64).contains(&limit) {
            return Err(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            ));
        }
        let wait = num("wait", 0)?;
        if wait > MAX_WAIT_SECS {
            return Err(format!(
                "wait must be between 0 and {MAX_WAIT_SECS} seconds, got {wait}"
            ));
        }
        let list = |name: &str| -> Result<Vec<String>, String> {
            q.all(name)
                .map(|v| match v {
                    "" => Err(format!("{name} must not be empty")),
                    v => Ok(v.to_string()),
                })
                .collect()
        };
        Ok(ChangesQuery {
            after: Seq::new(after),
            limit: limit as usize,
            wait: Duration::from_secs(wait),
            filter: Filter {
                accounts: list("account")?,
                calendars: list("calendar_id")?,
            },
        })
    }
}

/// `account` and `calendar_id` of `/v1/snapshot`, checked.
pub(super) fn snapshot_query(q: &Query) -> Result<CalendarKey, String> {
    q.only(&["account", "calendar_id"])?;
    match (q.one("account")?, q.one("calendar_id")?) {
        (Some(a), Some(c)) if !a.is_empty() && !c.is_empty() => Ok(CalendarKey::new(a, c)),
        _ => Err("account and calendar_id are required".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(q: &str) -> Result<ChangesQuery, String> {
        ChangesQuery::parse(&parse_query(Some(q)))
    }

    #[test]
    fn filters_repeat_and_everything_else_is_checked() {
        let q = changes("after=5&account=a&calendar_id=x%40group&calendar_id=y%23z").expect("ok");
        assert_eq!(q.after, Seq::new(5));
        assert_eq!(q.filter.accounts, ["a"]);
        assert_eq!(q.filter.calendars, ["x@group", "y#z"]);
        assert!(q.filter.matches("a", "y#z") && !q.filter.matches("b", "y#z"));
        assert!(!q.filter.matches("a", "other"));
        assert!(changes("").expect("ok").filter.matches("any", "thing"));
        for (bad, why) in [
            ("after=1&after=2", "after is given more than once"),
            ("calendar_id=", "calendar_id must not be empty"),
            ("acount=a", "unknown parameter \"acount\""),
            ("limit=0", "limit must be between 1 and 10000"),
        ] {
            let err = changes(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}

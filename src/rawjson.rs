//! [`RawJson`]: a JSON value kept as the text it arrived as. Event bodies go
//! from Google's answer to the store and the feed without being parsed into
//! `Value` trees and written out again; only the few fields the sync needs
//! are read from them, and whole bodies are parsed only to diff an update.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Valid JSON text, written out verbatim when serialized. Cloning shares
/// the text (a body is in both the stored version and its change record).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Arc<RawValue>);

impl RawJson {
    /// The JSON text of `value`.
    pub fn from_value(value: &Value) -> RawJson {
        // A Value always serializes (its map keys are strings).
        RawJson(Arc::from(
            serde_json::value::to_raw_value(value).expect("a Value serializes"),
        ))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Parses the text into a `Value` (`Null` if it cannot be, which a
    /// `RawJson` built by serde never is).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }

    /// Deserializes the text into `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_str(self.get())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        // A clone shares the text: no need to compare it byte by byte.
        Arc::ptr_eq(&self.0, &other.0) || self.get() == other.get()
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        RawJson::from_value(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_text_and_round_trips_inside_a_struct() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Rec {
            n: u32,
            body: RawJson,
        }
        let text = r#"{"n":1,"body":{"b":[1,2],"a":"\u00e9"}}"#;
        let rec: Rec = serde_json::from_str(text).expect("parse");
        assert_eq!(
            rec.body.get(),
            r#"{"b":[1,2],"a":"\u00e9"}"#,
            "verbatim, key order kept"
        );
        assert_eq!(serde_json::to_string(&rec).expect("ser"), text);
        assert_eq!(rec.body.to_value(), json!({"a": "é", "b": [1, 2]}));
        assert_eq!(RawJson::from(json!({"x": 1})).get(), r#"{"x":1}"#);
    }
}

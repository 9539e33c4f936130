//! Google credential files: `service_account` keys and `authorized_user`
//! refresh tokens, as `gcloud` and the Cloud console write them.
//!
//! Only shapes are checked here; whether Google accepts them is learnt at the
//! first token request. Error messages name fields, never their values.

use std::path::Path;

use serde_json::{Map, Value};

use crate::secret::Secret;

/// Google's token endpoint, used when a file has no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A parsed credentials file.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A service account key (JWT-bearer grant).
    ServiceAccount {
        client_email: String,
        private_key_id: String,
        private_key: Secret,
        token_uri: String,
    },
    /// A user's refresh token (refresh-token grant).
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
}

impl Credentials {
    /// The endpoint that tokens are requested from.
    pub fn token_uri(&self) -> &str {
        match self {
            Credentials::ServiceAccount { token_uri, .. } => token_uri,
            Credentials::AuthorizedUser { token_uri, .. } => token_uri,
        }
    }

    /// Reads and checks a credentials file; the error says what is wrong
    /// without quoting the file.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks the JSON text of a credentials file.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| format!("not valid JSON (line {}, column {})", e.line(), e.column()))?;
        let obj = json.as_object().ok_or("not a JSON object")?;
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
        let token_uri = obj
            .get("token_uri")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_TOKEN_URI);
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err("token_uri must be an http(s) URL".into());
        }
        let token_uri = token_uri.to_string();
        match kind {
            "service_account" => {
                let [email, key_id, key] =
                    fields(obj, ["client_email", "private_key_id", "private_key"])?;
                if !key.contains("-----BEGIN PRIVATE KEY-----") {
                    return Err("private_key is not a PKCS#8 PEM private key".into());
                }
                Ok(Credentials::ServiceAccount {
                    client_email: email,
                    private_key_id: key_id,
                    private_key: Secret::new(key),
                    token_uri,
                })
            }
            "authorized_user" => {
                let [id, secret, refresh] =
                    fields(obj, ["client_id", "client_secret", "refresh_token"])?;
                Ok(Credentials::AuthorizedUser {
                    client_id: id,
                    client_secret: Secret::new(secret),
                    refresh_token: Secret::new(refresh),
                    token_uri,
                })
            }
            "" => {
                Err("has no \"type\"; expected \"service_account\" or \"authorized_user\"".into())
            }
            other => Err(format!(
                "type \"{}\" is not supported; expected \"service_account\" or \"authorized_user\"",
                other.escape_debug()
            )),
        }
    }
}

/// The named string fields, or an error listing every one that is missing.
fn fields<const N: usize>(
    obj: &Map<String, Value>,
    names: [&str; N],
) -> Result<[String; N], String> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            obj.get(*n)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing field(s): {}", missing.join(", ")));
    }
    Ok(names.map(|n| obj[n].as_str().unwrap_or_default().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_field_and_no_value() {
        let err = Credentials::parse(r#"{"type":"service_account","private_key":"TOPSECRET"}"#)
            .unwrap_err();
        assert!(err.contains("client_email, private_key_id"), "{err}");
        assert!(!err.contains("TOPSECRET"));
    }

    #[test]
    fn authorized_user_defaults_token_uri() {
        let c = Credentials::parse(
            r#"{"type":"authorized_user","client_id":"a","client_secret":"b","refresh_token":"c"}"#,
        )
        .unwrap();
        assert_eq!(c.token_uri(), DEFAULT_TOKEN_URI);
        assert!(!format!("{c:?}").contains("\"b\""));
    }

    #[test]
    fn rejects_unknown_types() {
        let err = Credentials::parse(r#"{"type":"external_account"}"#).unwrap_err();
        assert!(err.contains("external_account"), "{err}");
    }
}

//! OAuth: the token endpoint (`POST /token`: JWT-bearer grant of service
//! accounts, refresh-token grant of users) and the check of
//! `Authorization: Bearer` on every API call, with scopes per method.

use std::collections::HashMap;

use base64::Engine;
use chrono::{Duration, Utc};
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

use super::error::ApiError;
use super::rng::base32hex_id;
use super::world::{AccessToken, World};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const SCOPE_ROOT: &str = "https://www.googleapis.com/auth/";
/// Audiences Google's token endpoint accepts besides its own URL; google-auth
/// always sends the first, whatever the key file's token_uri says.
const GOOGLE_AUDIENCES: &[&str] = &[
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
];

/// An OAuth error answer: 400/401 `{"error","error_description"}`.
#[derive(Debug)]
pub(super) struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn grant(description: impl Into<String>) -> Self {
        OAuthError {
            status: 400,
            error: "invalid_grant",
            description: description.into(),
        }
    }
    pub(super) fn body(&self) -> Value {
        json!({ "error": self.error, "error_description": self.description })
    }
}

/// Answers `POST /token` with form fields `form`.
pub(super) fn token(
    world: &mut World,
    form: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let (principal, client, scopes) = match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let assertion = form
                .get("assertion")
                .ok_or_else(|| OAuthError::grant("Missing assertion"))?;
            jwt_grant(world, assertion)?
        }
        Some("refresh_token") => refresh_grant(world, form)?,
        _ => {
            return Err(OAuthError {
                status: 400,
                error: "unsupported_grant_type",
                description: "Invalid grant_type".into(),
            })
        }
    };
    world.ensure_principal(&principal);
    let token = format!("ya29.emu-{}", base32hex_id(&mut world.rng, 40));
    let lifetime = world.opts.access_token_lifetime;
    let expires_at = Utc::now() + Duration::from_std(lifetime).unwrap_or(Duration::seconds(3599));
    let scope = scopes.join(" ");
    world.access_tokens.insert(
        token.clone(),
        AccessToken {
            principal,
            client,
            scopes,
            expires_at,
        },
    );
    Ok(
        json!({ "access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer", "scope": scope }),
    )
}

fn jwt_grant(world: &World, assertion: &str) -> Result<(String, String, Vec<String>), OAuthError> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [head, claims_b64, sig] = parts[..] else {
        return Err(OAuthError::grant("Invalid JWT: not three parts"));
    };
    let header: Value = decode_json(head).ok_or_else(|| OAuthError::grant("Invalid JWT header"))?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(OAuthError::grant("Invalid JWT: alg must be RS256"));
    }
    let claims: Value =
        decode_json(claims_b64).ok_or_else(|| OAuthError::grant("Invalid JWT claims"))?;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let sa = world.service_accounts.get(iss).ok_or_else(|| OAuthError {
        status: 401,
        error: "invalid_client",
        description: "The OAuth client was not found.".into(),
    })?;
    let signature = B64
        .decode(sig.trim_end_matches('='))
        .map_err(|_| OAuthError::grant("Invalid JWT signature"))?;
    let signed = &assertion[..head.len() + 1 + claims_b64.len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &sa.public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| OAuthError::grant("Invalid JWT Signature."))?;
    if let Some(kid) = header.get("kid").and_then(Value::as_str) {
        if kid != sa.key_id {
            return Err(OAuthError::grant("Invalid JWT Signature."));
        }
    }
    let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
    if aud != world.token_url && !GOOGLE_AUDIENCES.contains(&aud) {
        return Err(OAuthError::grant(format!(
            "Invalid JWT: aud must be {}",
            world.token_url
        )));
    }
    let now = Utc::now().timestamp();
    let skew = world.opts.jwt_clock_skew.as_secs() as i64;
    let (iat, exp) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    );
    let timely = matches!((iat, exp), (Some(iat), Some(exp)) if exp > iat && exp - iat <= 3600 && iat <= now + skew && exp >= now - skew);
    if !timely {
        return Err(OAuthError::grant("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."));
    }
    let scopes = scopes_of(claims.get("scope").and_then(Value::as_str).unwrap_or(""))?;
    let principal = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if sub != iss => {
            if !(sa.subjects.contains(sub) || sa.subjects.contains("*")) {
                return Err(OAuthError { status: 401, error: "unauthorized_client", description: "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.".into() });
            }
            sub.to_string()
        }
        _ => iss.to_string(),
    };
    Ok((principal, iss.to_string(), scopes))
}

fn refresh_grant(
    world: &World,
    form: &HashMap<String, String>,
) -> Result<(String, String, Vec<String>), OAuthError> {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let client = world
        .refresh_clients
        .get(field("client_id"))
        .filter(|c| c.secret == field("client_secret"))
        .ok_or_else(|| OAuthError {
            status: 401,
            error: "invalid_client",
            description: "The OAuth client was not found.".into(),
        })?;
    let (user, granted) = client
        .tokens
        .get(field("refresh_token"))
        .ok_or_else(|| OAuthError::grant("Token has been expired or revoked."))?;
    let scopes = match form.get("scope") {
        Some(s) => {
            let asked = scopes_of(s)?;
            if asked.iter().any(|a| !granted.contains(a)) {
                return Err(OAuthError {
                    status: 400,
                    error: "invalid_scope",
                    description: "The requested scope is not granted.".into(),
                });
            }
            asked
        }
        None => granted.clone(),
    };
    Ok((user.clone(), field("client_id").to_string(), scopes))
}

fn scopes_of(text: &str) -> Result<Vec<String>, OAuthError> {
    let scopes: Vec<String> = text.split_whitespace().map(String::from).collect();
    if scopes.is_empty() || scopes.iter().any(|s| !s.starts_with(SCOPE_ROOT)) {
        return Err(OAuthError {
            status: 400,
            error: "invalid_scope",
            description: format!("Invalid OAuth scope or ID token audience provided: {text:?}"),
        });
    }
    Ok(scopes)
}

fn decode_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&B64.decode(part.trim_end_matches('=')).ok()?).ok()
}

/// Scopes that allow a method: full, read-only and the narrower ones.
fn allowed_scopes(method: &str) -> &'static [&'static str] {
    match method {
        "events.list" | "events.get" | "events.watch" | "events.instances" => &[
            "calendar",
            "calendar.readonly",
            "calendar.events",
            "calendar.events.readonly",
            "calendar.events.owned",
            "calendar.events.owned.readonly",
        ],
        "events.insert" | "events.patch" | "events.update" | "events.delete" => {
            &["calendar", "calendar.events", "calendar.events.owned"]
        }
        "calendarList.list" | "calendarList.watch" => &[
            "calendar",
            "calendar.readonly",
            "calendar.calendarlist",
            "calendar.calendarlist.readonly",
        ],
        "calendars.get" => &[
            "calendar",
            "calendar.readonly",
            "calendar.calendars",
            "calendar.calendars.readonly",
        ],
        "calendars.insert" | "calendars.delete" => &["calendar", "calendar.calendars"],
        // channels.stop accepts any calendar scope.
        _ => &[
            "calendar",
            "calendar.readonly",
            "calendar.events",
            "calendar.events.readonly",
            "calendar.calendarlist",
            "calendar.calendarlist.readonly",
            "calendar.events.owned",
            "calendar.events.owned.readonly",
        ],
    }
}

/// Checks the bearer token of a call to `method`: (principal, client).
pub(super) fn authorize(
    world: &World,
    header: Option<&str>,
    method: &str,
) -> Result<(String, String), ApiError> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let grant = world
        .access_tokens
        .get(token.trim())
        .filter(|t| t.expires_at > Utc::now())
        .ok_or_else(ApiError::unauthorized)?;
    let allowed = allowed_scopes(method);
    let ok = grant.scopes.iter().any(|s| {
        s.strip_prefix(SCOPE_ROOT)
            .is_some_and(|short| allowed.contains(&short))
    });
    if !ok {
        return Err(ApiError::insufficient_permissions());
    }
    Ok((grant.principal.clone(), grant.client.clone()))
}

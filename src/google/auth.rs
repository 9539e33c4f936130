//! Access tokens for one account. Service accounts go through yup-oauth2
//! (it honours the key's `token_uri` and signs the JWT, with `sub` for
//! domain-wide delegation); authorized users through a refresh-token grant
//! of our own, because yup-oauth2 hard-codes Google's endpoint for those.
//! Tokens are cached and refreshed before they expire; fetches are
//! single-flight, so many calendars of one account ask once.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;
use yup_oauth2::hyper_rustls::{self, ConfigBuilderExt};

use super::GoogleError;
use crate::config::Credentials;
use crate::secret::Secret;

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// A token counts as expired this long before Google says it does.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Gets access tokens for one account.
pub struct Authenticator {
    kind: Kind,
    scopes: Vec<String>,
    /// The cached token and when it must be replaced; the lock makes
    /// fetches single-flight.
    cache: Mutex<Option<(Secret, Instant)>>,
}

enum Kind {
    ServiceAccount(Box<yup_oauth2::authenticator::Authenticator<Https>>),
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
        http: reqwest::Client,
    },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Authenticator {
    /// Builds the authenticator for a credentials file.
    pub async fn new(
        creds: &Credentials,
        subject: Option<&str>,
        scopes: Vec<String>,
        http: reqwest::Client,
    ) -> Result<Self, GoogleError> {
        let kind = match creds {
            Credentials::ServiceAccount {
                client_email,
                private_key_id,
                private_key,
                token_uri,
            } => {
                let key = yup_oauth2::ServiceAccountKey {
                    key_type: Some("service_account".into()),
                    project_id: None,
                    private_key_id: Some(private_key_id.clone()),
                    private_key: private_key.expose().to_string(),
                    client_email: client_email.clone(),
                    client_id: None,
                    auth_uri: None,
                    token_uri: token_uri.clone(),
                    auth_provider_x509_cert_url: None,
                    client_x509_cert_url: None,
                };
                let mut builder =
                    yup_oauth2::ServiceAccountAuthenticator::with_client(key, client());
                if let Some(sub) = subject {
                    builder = builder.subject(sub);
                }
                let auth = builder.build().await.map_err(|e| {
                    GoogleError::Auth(format!("service account key rejected: {}", e.kind()))
                })?;
                Kind::ServiceAccount(Box::new(auth))
            }
            Credentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => Kind::AuthorizedUser {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token: refresh_token.clone(),
                token_uri: token_uri.clone(),
                http,
            },
        };
        Ok(Authenticator {
            kind,
            scopes,
            cache: Mutex::new(None),
        })
    }

    /// A valid access token (cached until shortly before it expires).
    pub async fn token(&self) -> Result<Secret, GoogleError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, until)) = cache.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fetch(false).await?;
        *cache = Some((
            token.clone(),
            Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
        ));
        Ok(token)
    }

    /// Forgets the cached token and fetches a new one (after a 401).
    pub async fn refresh(&self) -> Result<Secret, GoogleError> {
        let mut cache = self.cache.lock().await;
        let (token, lifetime) = self.fetch(true).await?;
        *cache = Some((
            token.clone(),
            Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
        ));
        Ok(token)
    }

    async fn fetch(&self, force: bool) -> Result<(Secret, Duration), GoogleError> {
        match &self.kind {
            Kind::ServiceAccount(auth) => {
                let mut token = if force {
                    auth.force_refreshed_token(&self.scopes).await
                } else {
                    auth.token(&self.scopes).await
                }
                .map_err(map_yup)?;
                if token.token().is_none() && !force {
                    // yup-oauth2 keeps such a token in its cache and would
                    // hand it out again: ask the endpoint afresh.
                    token = auth
                        .force_refreshed_token(&self.scopes)
                        .await
                        .map_err(map_yup)?;
                }
                let lifetime = token
                    .expiration_time()
                    .map(|t| {
                        Duration::from_secs(
                            (t.unix_timestamp() - chrono::Utc::now().timestamp()).max(0) as u64,
                        )
                    })
                    .unwrap_or(Duration::from_secs(3000));
                // yup-oauth2 takes an error page it can read as JSON (a
                // 500's body) for a token without a value: a passing failure.
                let value = token.token().ok_or_else(|| {
                    GoogleError::Transient("the token endpoint's answer had no access_token".into())
                })?;
                Ok((Secret::new(value), lifetime))
            }
            Kind::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
                http,
            } => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                ];
                let resp = http
                    .post(token_uri)
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| GoogleError::Transient(Box::new(e)))?;
                let status = resp.status();
                if !status.is_success() {
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    let code = body.get("error").and_then(|v| v.as_str()).unwrap_or("");
                    if status.is_client_error() && needs_person(code) {
                        return Err(refused(code));
                    }
                    return Err(GoogleError::Transient(
                        format!("token endpoint answered {status} {code}").into(),
                    ));
                }
                let body: TokenResponse = super::client::read_json(resp, "token endpoint").await?;
                Ok((
                    Secret::new(body.access_token),
                    Duration::from_secs(body.expires_in.unwrap_or(3599)),
                ))
            }
        }
    }
}

/// OAuth error codes that only a person can fix: the credentials, the
/// grant or the delegation are wrong or revoked. Any other answer of the
/// token endpoint (a 5xx, an HTML error page, a cut-off body,
/// `temporarily_unavailable`) passes by itself.
fn needs_person(code: &str) -> bool {
    matches!(
        code,
        "invalid_grant"
            | "invalid_client"
            | "unauthorized_client"
            | "access_denied"
            | "invalid_scope"
            | "unsupported_grant_type"
            | "invalid_request"
    )
}

/// The token endpoint refused the credentials: say what to do.
fn refused(code: &str) -> GoogleError {
    GoogleError::Auth(format!(
        "token endpoint refused the credentials ({code}); replace or re-authorise them and reload"
    ))
}

/// Refusals that need a person are [`GoogleError::Auth`]; everything else
/// (unreachable, a server error, an answer that is not the JSON expected)
/// is transient, as for an authorized user. Messages never include the key
/// or a token.
fn map_yup(e: yup_oauth2::Error) -> GoogleError {
    match e {
        yup_oauth2::Error::AuthError(a) if needs_person(a.error.as_str()) => {
            refused(a.error.as_str())
        }
        yup_oauth2::Error::AuthError(a) => {
            GoogleError::Transient(format!("token endpoint answered {}", a.error.as_str()).into())
        }
        yup_oauth2::Error::HttpError(_)
        | yup_oauth2::Error::HttpClientError(_)
        | yup_oauth2::Error::LowLevelError(_) => {
            GoogleError::Transient(format!("token endpoint unreachable: {e}").into())
        }
        yup_oauth2::Error::JSONError(_) | yup_oauth2::Error::MissingAccessToken => {
            GoogleError::Transient("the token endpoint's answer was not a token response".into())
        }
        other => GoogleError::Auth(format!(
            "token request failed: {}",
            other.to_string().chars().take(200).collect::<String>()
        )),
    }
}

/// yup-oauth2's HTTP client: rustls with the system's roots when it has
/// any, else none (then only http token endpoints work, and an https one
/// fails with a TLS error at the first token request instead of at start).
fn client() -> yup_oauth2::CustomHyperClientBuilder<Https> {
    crate::tls::ensure_provider();
    let builder = rustls::ClientConfig::builder();
    let config = match builder.clone().with_native_roots() {
        Ok(b) => b.with_no_client_auth(),
        Err(_) => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    yup_oauth2::CustomHyperClientBuilder::from(client)
}

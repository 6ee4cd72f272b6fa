//! Bearer tokens for Resource Manager, behind a small [`TokenSource`] trait.
//!
//! Sources, in the order [`from_environment`] tries them:
//!
//! 1. `FAILBACK_AZURE_TOKEN`: a static bearer token (the emulator, tests, or
//!    a token a pipeline obtained itself).
//! 2. Environment client secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_CLIENT_SECRET` (and optionally `AZURE_AUTHORITY_HOST`), the
//!    OAuth 2.0 client-credentials flow of Microsoft Entra ID.
//! 3. Azure CLI: `az account get-access-token --resource ...`.
//! 4. Managed identity: the App Service / Functions endpoint
//!    (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) or the instance metadata
//!    service of a VM (IMDS), with `AZURE_CLIENT_ID` for a user-assigned
//!    identity.
//!
//! # Guarantees
//!
//! No token, secret or credential is ever logged, printed or stored: the
//! types that hold one have `Debug` impls that redact it, errors name the
//! source and the variable, never the value, and tokens live in memory only.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::error::AzureError;
use crate::provider::BoxFuture;

/// The environment variable holding a static bearer token.
pub const TOKEN_ENV: &str = "FAILBACK_AZURE_TOKEN";

/// Tokens are renewed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A bearer token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct AccessToken {
    secret: String,
    expires_at: Option<Instant>,
}

impl AccessToken {
    pub fn new(secret: String, expires_at: Option<Instant>) -> AccessToken {
        AccessToken { secret, expires_at }
    }

    /// The value for the `Authorization: Bearer` header. Never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn fresh(&self) -> bool {
        self.expires_at
            .is_none_or(|at| at.saturating_duration_since(Instant::now()) > REFRESH_MARGIN)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A secret string (client secret). Its `Debug` never shows the value.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Gives bearer tokens for Resource Manager.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token valid for at least a few more minutes.
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, AzureError>>;
    /// Names the source in messages ("FAILBACK_AZURE_TOKEN", "Azure CLI", ...).
    fn name(&self) -> &'static str;
}

/// A fixed token (`FAILBACK_AZURE_TOKEN`).
#[derive(Debug)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    pub fn new(secret: String) -> StaticToken {
        StaticToken(AccessToken::new(secret, None))
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, AzureError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }

    fn name(&self) -> &'static str {
        TOKEN_ENV
    }
}

/// The resource (audience) of tokens for an ARM endpoint: its origin with a
/// trailing slash, e.g. `https://management.azure.com/`.
pub fn resource_for(arm_endpoint: &Url) -> String {
    let origin = arm_endpoint.origin().ascii_serialization();
    format!("{origin}/")
}

/// A cache in front of a token request.
#[derive(Debug, Default)]
struct Cache(Mutex<Option<AccessToken>>);

impl Cache {
    async fn get_or<F>(&self, fetch: F) -> Result<AccessToken, AzureError>
    where
        F: Future<Output = Result<AccessToken, AzureError>>,
    {
        let mut slot = self.0.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| t.fresh()) {
            return Ok(token.clone());
        }
        let token = fetch.await?;
        *slot = Some(token.clone());
        Ok(token)
    }
}

/// The OAuth 2.0 token response of Entra ID and of managed identity
/// endpoints (`expires_in` is a number or a string depending on the source).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    fn into_token(self, now: Instant) -> AccessToken {
        let secs = match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        AccessToken::new(
            self.access_token,
            Some(now + Duration::from_secs(secs.unwrap_or(300))),
        )
    }
}

/// Environment client secret: the client-credentials flow.
#[derive(Debug)]
pub struct ClientSecretCredential {
    http: reqwest::Client,
    authority: Url,
    tenant: String,
    client_id: String,
    secret: Secret,
    scope: String,
    cache: Cache,
}

impl ClientSecretCredential {
    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` and
    /// `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`);
    /// `None` unless the three are set.
    ///
    /// Errors: an authority host that is not an https URL.
    pub fn from_env(
        http: reqwest::Client,
        resource: &str,
    ) -> Result<Option<ClientSecretCredential>, AzureError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (Some(tenant), Some(client_id), Some(secret)) = (
            var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET"),
        ) else {
            return Ok(None);
        };
        let authority = var("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|| "https://login.microsoftonline.com".to_owned());
        let authority = Url::parse(&authority)
            .ok()
            .filter(|u| u.scheme() == "https" || super::config::is_loopback(u))
            .ok_or_else(|| {
                AzureError::config(format!(
                    "AZURE_AUTHORITY_HOST '{authority}' is not an https URL"
                ))
            })?;
        Ok(Some(ClientSecretCredential {
            http,
            authority,
            tenant,
            client_id,
            secret: Secret(secret),
            scope: format!("{resource}.default"),
            cache: Cache::default(),
        }))
    }

    /// A credential with explicit settings (tests of the token flow).
    #[cfg(test)]
    pub(crate) fn for_test(
        http: reqwest::Client,
        authority: Url,
        tenant: &str,
        client_id: &str,
        secret: &str,
        resource: &str,
    ) -> ClientSecretCredential {
        ClientSecretCredential {
            http,
            authority,
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            secret: Secret(secret.to_owned()),
            scope: format!("{resource}.default"),
            cache: Cache::default(),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, AzureError> {
        let mut url = self.authority.clone();
        url.set_path(&format!("/{}/oauth2/v2.0/token", self.tenant));
        let body = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", &self.secret.0),
            ("scope", &self.scope),
        ]);
        let now = Instant::now();
        let response = self
            .http
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                AzureError::transient(format!(
                    "cannot reach Microsoft Entra ID at {} for a token: {}",
                    self.authority,
                    super::client::transport_error(&e)
                ))
            })?;
        token_response(response, now, "the client secret in AZURE_CLIENT_SECRET").await
    }
}

impl TokenSource for ClientSecretCredential {
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, AzureError>> {
        Box::pin(self.cache.get_or(self.fetch()))
    }

    fn name(&self) -> &'static str {
        "environment client secret (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)"
    }
}

/// Reads a token endpoint's answer; an error names the source, never the
/// request (which holds the secret).
async fn token_response(
    response: reqwest::Response,
    now: Instant,
    what: &str,
) -> Result<AccessToken, AzureError> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        // Entra ID's error bodies hold `error` and `error_description`, never the secret.
        let described = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("error_description")
                    .or_else(|| v.get("error"))
                    .and_then(|d| d.as_str().map(str::to_owned))
            })
            .unwrap_or_default();
        return Err(AzureError::failed(format!(
            "no token from {what}: HTTP {}{}",
            status.as_u16(),
            if described.is_empty() {
                String::new()
            } else {
                format!(": {}", described.lines().next().unwrap_or_default())
            }
        )));
    }
    serde_json::from_str::<TokenResponse>(&text)
        .map(|t| t.into_token(now))
        .map_err(|_| {
            AzureError::failed(format!(
                "no token from {what}: the answer has no access_token"
            ))
        })
}

/// `application/x-www-form-urlencoded`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The Azure CLI's logged-in account.
#[derive(Debug)]
pub struct AzureCliCredential {
    resource: String,
    cache: Cache,
}

impl AzureCliCredential {
    pub fn new(resource: &str) -> AzureCliCredential {
        AzureCliCredential {
            resource: resource.to_owned(),
            cache: Cache::default(),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, AzureError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct CliToken {
            access_token: String,
            #[serde(default, rename = "expires_on")]
            expires_on: Option<u64>,
        }
        let program = if cfg!(windows) { "az.cmd" } else { "az" };
        let now = Instant::now();
        let out = tokio::process::Command::new(program)
            .args([
                "account",
                "get-access-token",
                "--resource",
                &self.resource,
                "--output",
                "json",
            ])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .map_err(|_| {
                AzureError::failed(
                    "Azure CLI: `az account get-access-token` did not answer within 30 s"
                        .to_owned(),
                )
            })?
            .map_err(|e| AzureError::failed(format!("Azure CLI: cannot run `{program}`: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(AzureError::failed(format!(
                "Azure CLI: `az account get-access-token` failed ({}): {}; run `az login`",
                out.status,
                stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
            )));
        }
        let token: CliToken = serde_json::from_slice(&out.stdout).map_err(|_| {
            AzureError::failed(
                "Azure CLI: `az account get-access-token` printed no accessToken".to_owned(),
            )
        })?;
        let expires_at = token.expires_on.map(|at| {
            let unix_now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            now + Duration::from_secs(at.saturating_sub(unix_now))
        });
        Ok(AccessToken::new(
            token.access_token,
            expires_at.or(Some(now + Duration::from_secs(300))),
        ))
    }
}

impl TokenSource for AzureCliCredential {
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, AzureError>> {
        Box::pin(self.cache.get_or(self.fetch()))
    }

    fn name(&self) -> &'static str {
        "Azure CLI"
    }
}

/// Managed identity (App Service endpoint, else the VM's IMDS).
#[derive(Debug)]
pub struct ManagedIdentityCredential {
    http: reqwest::Client,
    resource: String,
    client_id: Option<String>,
    cache: Cache,
}

impl ManagedIdentityCredential {
    pub fn new(http: reqwest::Client, resource: &str) -> ManagedIdentityCredential {
        ManagedIdentityCredential {
            http,
            resource: resource.to_owned(),
            client_id: std::env::var("AZURE_CLIENT_ID")
                .ok()
                .filter(|v| !v.is_empty()),
            cache: Cache::default(),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, AzureError> {
        let app_service = std::env::var("IDENTITY_ENDPOINT")
            .ok()
            .zip(std::env::var("IDENTITY_HEADER").ok());
        let (mut url, header) = match &app_service {
            Some((endpoint, header)) => {
                let mut url = Url::parse(endpoint)
                    .map_err(|_| AzureError::config("IDENTITY_ENDPOINT is not a URL".to_owned()))?;
                url.query_pairs_mut()
                    .append_pair("api-version", "2019-08-01");
                (url, ("X-IDENTITY-HEADER", Secret(header.clone())))
            }
            None => {
                let mut url = Url::parse("http://169.254.169.254/metadata/identity/oauth2/token")
                    .map_err(|e| AzureError::config(e.to_string()))?;
                url.query_pairs_mut()
                    .append_pair("api-version", "2018-02-01");
                (url, ("Metadata", Secret("true".to_owned())))
            }
        };
        url.query_pairs_mut()
            .append_pair("resource", &self.resource);
        if let Some(id) = &self.client_id {
            url.query_pairs_mut().append_pair("client_id", id);
        }
        let now = Instant::now();
        let response = self
            .http
            .get(url)
            .header(header.0, header.1.0.as_str())
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| {
                AzureError::failed(format!(
                    "managed identity: no identity endpoint answered ({}); this is not an Azure \
                     host with a managed identity",
                    super::client::transport_error(&e)
                ))
            })?;
        token_response(response, now, "the managed identity").await
    }
}

impl TokenSource for ManagedIdentityCredential {
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, AzureError>> {
        Box::pin(self.cache.get_or(self.fetch()))
    }

    fn name(&self) -> &'static str {
        "managed identity"
    }
}

/// Tries each source in order; keeps the first that gives a token.
#[derive(Debug)]
pub struct ChainedCredential {
    sources: Vec<Box<dyn TokenSource>>,
    chosen: std::sync::Mutex<Option<usize>>,
}

impl ChainedCredential {
    pub fn new(sources: Vec<Box<dyn TokenSource>>) -> ChainedCredential {
        ChainedCredential {
            sources,
            chosen: std::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, AzureError> {
        let chosen = self.chosen.lock().ok().and_then(|c| *c);
        if let Some(source) = chosen.and_then(|i| self.sources.get(i)) {
            return source.token().await;
        }
        let mut tried = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            match source.token().await {
                Ok(token) => {
                    tracing::info!("Azure credential: using {}", source.name());
                    if let Ok(mut c) = self.chosen.lock() {
                        *c = Some(i);
                    }
                    return Ok(token);
                }
                Err(e) => tried.push(format!("{}: {e}", source.name())),
            }
        }
        Err(AzureError::failed(format!(
            "no Azure credential: set {TOKEN_ENV}, or AZURE_TENANT_ID + AZURE_CLIENT_ID + \
             AZURE_CLIENT_SECRET, or run `az login`, or run on a host with a managed identity \
             (docs/azure.md, \"Credentials\"). Tried: {}",
            tried.join("; ")
        )))
    }
}

impl TokenSource for ChainedCredential {
    fn token(&self) -> BoxFuture<'_, Result<AccessToken, AzureError>> {
        Box::pin(self.fetch())
    }

    fn name(&self) -> &'static str {
        "credential chain"
    }
}

/// The credential for `arm_endpoint`, from the environment (module docs).
///
/// Errors: a malformed `AZURE_AUTHORITY_HOST`.
pub fn from_environment(
    http: reqwest::Client,
    arm_endpoint: &Url,
) -> Result<Arc<dyn TokenSource>, AzureError> {
    if let Some(token) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Arc::new(StaticToken::new(token.trim().to_owned())));
    }
    let resource = resource_for(arm_endpoint);
    let mut sources: Vec<Box<dyn TokenSource>> = Vec::new();
    if let Some(secret) = ClientSecretCredential::from_env(http.clone(), &resource)? {
        sources.push(Box::new(secret));
    }
    sources.push(Box::new(AzureCliCredential::new(&resource)));
    sources.push(Box::new(ManagedIdentityCredential::new(http, &resource)));
    Ok(Arc::new(ChainedCredential::new(sources)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let token = AccessToken::new("eyJ-very-secret".to_owned(), None);
        assert!(!format!("{token:?}").contains("very-secret"));
        let source = StaticToken::new("eyJ-very-secret".to_owned());
        assert!(!format!("{source:?}").contains("very-secret"));
        let cred = ClientSecretCredential {
            http: reqwest::Client::new(),
            authority: Url::parse("https://login.microsoftonline.com").unwrap(),
            tenant: "t".into(),
            client_id: "c".into(),
            secret: Secret("s3cr3t-value".into()),
            scope: "https://management.azure.com/.default".into(),
            cache: Cache::default(),
        };
        assert!(!format!("{cred:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn form_bodies_are_encoded() {
        assert_eq!(
            form_encode(&[
                ("scope", "https://management.azure.com/.default"),
                ("a b", "&=")
            ]),
            "scope=https%3A%2F%2Fmanagement.azure.com%2F.default&a+b=%26%3D"
        );
    }

    #[test]
    fn the_resource_is_the_endpoint_origin() {
        let url = Url::parse("https://management.usgovcloudapi.net").unwrap();
        assert_eq!(resource_for(&url), "https://management.usgovcloudapi.net/");
    }
}

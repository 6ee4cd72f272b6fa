//! A small typed client for the Site Recovery REST API under one vault:
//! bearer tokens, JSON GET/POST/PUT with `api-version`, paging, Resource
//! Manager long-running operations and Site Recovery jobs, and error bodies
//! turned into messages (see [`super::error`]).
//!
//! # Guarantees
//!
//! - Requests go only to the configured Resource Manager endpoint: a
//!   `nextLink`, `Location` or `Azure-AsyncOperation` URL on another origin
//!   is refused, so the bearer token never leaves for another host.
//! - Only safe requests (GET) are retried here. An action (POST, PUT) is
//!   sent once; after a lost reply the caller re-reads the item and decides
//!   again, so an action is never repeated blindly.
//! - Polling honours `Retry-After` (capped); without it, it backs off
//!   exponentially.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode, Url, header::HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::config::{AzureConfig, VaultId};
use super::error::{AzureError, ErrorClass, parse_error_body};
use super::models::{Job, JobState, Page};
use super::token::TokenSource;

/// How long-running operations and jobs are polled.
#[derive(Clone, Copy, Debug)]
pub struct PollPolicy {
    /// First wait when the service gives no `Retry-After`.
    pub first: Duration,
    /// Longest wait between two polls without `Retry-After`.
    pub max: Duration,
    /// Shortest wait between two polls (also for `Retry-After: 0`).
    pub floor: Duration,
    /// `Retry-After` values above this are capped.
    pub max_retry_after: Duration,
    /// Attempts of a GET that fails transiently before giving up.
    pub get_attempts: u32,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            floor: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(120),
            get_attempts: 4,
        }
    }
}

impl PollPolicy {
    /// The wait before poll number `attempt` (0-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_retry_after).max(self.floor),
            None => self
                .first
                .saturating_mul(1u32 << attempt.min(16))
                .min(self.max)
                .max(self.floor),
        }
    }
}

/// The answer to an action (POST or PUT): 200/201 with a body, or 202 with
/// the URLs to poll.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub status: u16,
    pub location: Option<String>,
    pub async_operation: Option<String>,
    pub retry_after: Option<Duration>,
    pub body: Option<Value>,
}

impl Accepted {
    /// The Site Recovery job behind the operation: as PowerShell does, the
    /// name between `operationresults/` and the next `?` of `Location`
    /// (asr-api.md section 4), or a `replicationJobs/{name}` segment.
    pub fn job_name(&self) -> Option<String> {
        [self.location.as_deref(), self.async_operation.as_deref()]
            .into_iter()
            .flatten()
            .find_map(job_name_in)
    }
}

fn job_name_in(url: &str) -> Option<String> {
    let path = url.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    segments.windows(2).find_map(|w| {
        let key = w[0].to_ascii_lowercase();
        (matches!(key.as_str(), "operationresults" | "replicationjobs")
            && !w[1].is_empty()
            && !w[1].eq_ignore_ascii_case("None"))
        .then(|| w[1].to_owned())
    })
}

/// The client of one vault.
#[derive(Debug, Clone)]
pub struct AsrClient {
    http: reqwest::Client,
    endpoint: Url,
    vault: VaultId,
    api_version: String,
    tokens: Arc<dyn TokenSource>,
    pub poll: PollPolicy,
}

/// The HTTP client every Azure request uses (also for tokens).
///
/// Errors: the TLS backend cannot be set up.
pub fn http_client() -> Result<reqwest::Client, AzureError> {
    reqwest::Client::builder()
        .user_agent(concat!("failback/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AzureError::config(format!("cannot set up the HTTPS client: {e}")))
}

impl AsrClient {
    pub fn new(
        config: &AzureConfig,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
    ) -> AsrClient {
        AsrClient {
            http,
            endpoint: config.arm_endpoint.clone(),
            vault: config.vault.clone(),
            api_version: config.api_version.clone(),
            tokens,
            poll: PollPolicy::default(),
        }
    }

    pub fn vault(&self) -> &VaultId {
        &self.vault
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The full URL of an ARM path (`/subscriptions/...`, with or without a
    /// query) or of a URL the service returned (same origin only), with
    /// `api-version` added when it is missing.
    ///
    /// Errors: a URL on another origin, or not a URL.
    pub fn url(&self, path_or_url: &str) -> Result<Url, AzureError> {
        let mut url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            let url = Url::parse(path_or_url)
                .map_err(|e| AzureError::failed(format!("Azure returned a malformed URL ({e})")))?;
            if url.origin() != self.endpoint.origin() {
                return Err(AzureError::failed(format!(
                    "refusing to follow a URL on {} (not the Resource Manager endpoint {}): the \
                     bearer token is sent only to the configured endpoint",
                    url.origin().ascii_serialization(),
                    self.endpoint.origin().ascii_serialization()
                )));
            }
            url
        } else {
            let (path, query) = match path_or_url.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path_or_url, None),
            };
            let mut url = self.endpoint.clone();
            url.set_path(path);
            url.set_query(query);
            url
        };
        if !url.query_pairs().any(|(k, _)| k == "api-version") {
            url.query_pairs_mut()
                .append_pair("api-version", &self.api_version);
        }
        Ok(url)
    }

    /// One request; transport errors are transient.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, String), AzureError> {
        let token = self.tokens.token().await?;
        tracing::debug!(%method, path = %url.path(), "{what}");
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.secret())
            .header("Accept", "application/json")
            .header("x-ms-client-request-id", request_id());
        request = match body {
            Some(b) => request.json(&b),
            None => request.header("Content-Length", "0"),
        };
        let response = request.send().await.map_err(|e| {
            AzureError::transient(format!(
                "{what}: cannot reach Resource Manager at {}: {}",
                self.endpoint.origin().ascii_serialization(),
                transport_error(&e)
            ))
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| {
            AzureError::transient(format!(
                "{what}: the answer was cut off: {}",
                transport_error(&e)
            ))
        })?;
        Ok((status, headers, text))
    }

    /// GET and decode, retrying transient failures (throttling, 5xx,
    /// transport) a few times.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, what: &str) -> Result<T, AzureError> {
        let url = self.url(path)?;
        let mut attempt = 0;
        loop {
            let e = match self.send(Method::GET, url.clone(), None, what).await {
                Ok((status, _, text)) if status.is_success() => {
                    return serde_json::from_str(&text).map_err(|e| {
                        AzureError::failed(format!(
                            "{what}: Azure answered with an unexpected body ({e})"
                        ))
                    });
                }
                Ok((status, headers, text)) => {
                    AzureError::from_response(what, status.as_u16(), &text, retry_after(&headers))
                }
                Err(e) => e,
            };
            attempt += 1;
            if e.class != ErrorClass::Transient || attempt >= self.poll.get_attempts {
                return Err(e);
            }
            let wait = self.poll.delay(attempt - 1, e.retry_after);
            tracing::warn!("{}; retrying in {wait:?}", e.message);
            tokio::time::sleep(wait).await;
        }
    }

    /// Every item of a list operation, following `nextLink`.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<Vec<T>, AzureError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(link) = next.take() {
            let page: Page<T> = self.get(&link, what).await?;
            items.extend(page.value);
            pages += 1;
            if pages > 10_000 {
                return Err(AzureError::failed(format!(
                    "{what}: more than 10000 pages; the service keeps returning nextLink"
                )));
            }
            next = page.next_link.filter(|l| !l.is_empty());
        }
        Ok(items)
    }

    /// POST an action, once (see the module's guarantees).
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<Accepted, AzureError> {
        self.action(Method::POST, path, body, what).await
    }

    /// PUT a resource, once.
    pub async fn put<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        what: &str,
    ) -> Result<Accepted, AzureError> {
        self.action(Method::PUT, path, Some(body), what).await
    }

    async fn action<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<Accepted, AzureError> {
        let url = self.url(path)?;
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| AzureError::failed(format!("{what}: cannot encode the request: {e}")))?;
        let (status, headers, text) = self.send(method, url, body, what).await?;
        if !status.is_success() {
            return Err(AzureError::from_response(
                what,
                status.as_u16(),
                &text,
                retry_after(&headers),
            ));
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Accepted {
            status: status.as_u16(),
            location: header("location"),
            async_operation: header("azure-asyncoperation"),
            retry_after: retry_after(&headers),
            body: serde_json::from_str(&text).ok(),
        })
    }

    /// Waits for a Resource Manager long-running operation: polls
    /// `Azure-AsyncOperation` (preferred) until its `status` is terminal,
    /// or `Location` until it stops answering 202; returns the final body.
    ///
    /// Errors: the operation failed or was cancelled (with the service's
    /// error), or polling failed.
    pub async fn wait(&self, accepted: &Accepted, what: &str) -> Result<Option<Value>, AzureError> {
        if accepted.status != 202
            && accepted.async_operation.is_none()
            && accepted.location.is_none()
        {
            return Ok(accepted.body.clone());
        }
        let mut retry = accepted.retry_after;
        let mut attempt = 0;
        if let Some(op) = &accepted.async_operation {
            loop {
                tokio::time::sleep(self.poll.delay(attempt, retry)).await;
                attempt += 1;
                let url = self.url(op)?;
                let (status, headers, text) = self.send(Method::GET, url, None, what).await?;
                if !status.is_success() {
                    return Err(AzureError::from_response(
                        what,
                        status.as_u16(),
                        &text,
                        retry_after(&headers),
                    ));
                }
                retry = retry_after(&headers);
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match body.get("status").and_then(Value::as_str).unwrap_or("") {
                    s if s.eq_ignore_ascii_case("Succeeded") => break,
                    s if s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Canceled") => {
                        let details = parse_error_body(&text);
                        let rendered: Vec<String> =
                            details.iter().map(ToString::to_string).collect();
                        return Err(AzureError::failed(format!(
                            "{what}: the operation ended {s}{}",
                            if rendered.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", rendered.join(" "))
                            }
                        )));
                    }
                    _ => {}
                }
            }
            // final-state-via: location.
            return match &accepted.location {
                Some(location) => self.get::<Value>(location, what).await.map(Some),
                None => Ok(None),
            };
        }
        let Some(location) = &accepted.location else {
            return Ok(accepted.body.clone());
        };
        loop {
            tokio::time::sleep(self.poll.delay(attempt, retry)).await;
            attempt += 1;
            let url = self.url(location)?;
            let (status, headers, text) = self.send(Method::GET, url, None, what).await?;
            match status.as_u16() {
                202 => retry = retry_after(&headers),
                200 | 201 | 204 => return Ok(serde_json::from_str(&text).ok()),
                code => {
                    return Err(AzureError::from_response(
                        what,
                        code,
                        &text,
                        retry_after(&headers),
                    ));
                }
            }
        }
    }

    /// The ARM path of a job from its name or ID (the last segment).
    pub fn job_path(&self, job_id_or_name: &str) -> String {
        let name = job_id_or_name
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        format!("{}/replicationJobs/{name}", self.vault.path())
    }

    pub async fn job(&self, job_id_or_name: &str, what: &str) -> Result<Job, AzureError> {
        self.get(&self.job_path(job_id_or_name), what).await
    }

    /// Polls a job until it leaves NotStarted/InProgress; returns it
    /// (Succeeded, Suspended, Failed, Cancelled). `first_wait` is the
    /// `Retry-After` of the action that started it, if any.
    pub async fn wait_job(
        &self,
        job_id_or_name: &str,
        first_wait: Option<Duration>,
        what: &str,
    ) -> Result<Job, AzureError> {
        let mut attempt: u32 = 0;
        let mut wait = first_wait;
        loop {
            if attempt > 0 || wait.is_some() {
                tokio::time::sleep(self.poll.delay(attempt.saturating_sub(1), wait)).await;
            }
            let job = self.job(job_id_or_name, what).await?;
            if !job.state().running() && job.state() != JobState::Other {
                return Ok(job);
            }
            attempt += 1;
            wait = first_wait;
        }
    }
}

/// `Retry-After` in seconds (an HTTP date is ignored: backoff applies).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A random GUID for `x-ms-client-request-id` (quoted in support cases).
fn request_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// A transport error, short, without the URL (a token endpoint's URL may
/// carry a client ID; messages stay short either way).
pub(crate) fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    match last {
        Some(cause) => format!("{kind} ({cause})"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::azure::token::StaticToken;

    fn client(endpoint: &str) -> AsrClient {
        let config = AzureConfig::new(
            Some(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v",
            ),
            None,
            endpoint,
            "2025-08-01",
            None,
        )
        .unwrap();
        AsrClient::new(
            &config,
            reqwest::Client::new(),
            Arc::new(StaticToken::new("t".into())),
        )
    }

    #[test]
    fn urls_get_the_api_version_and_stay_on_the_endpoint() {
        let c = client("https://management.azure.com");
        assert_eq!(
            c.url("/subscriptions/s/x?$filter=a").unwrap().as_str(),
            "https://management.azure.com/subscriptions/s/x?$filter=a&api-version=2025-08-01"
        );
        assert_eq!(
            c.url("https://management.azure.com/a?api-version=2024-10-01")
                .unwrap()
                .as_str(),
            "https://management.azure.com/a?api-version=2024-10-01"
        );
        let e = c.url("https://evil.example/a").unwrap_err();
        assert!(e.message.contains("refusing"), "{e}");
    }

    #[test]
    fn the_job_name_comes_from_the_location_header() {
        let a = Accepted {
            status: 202,
            location: Some("https://management.azure.com/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/abc/operationresults/abc?api-version=2025-08-01".into()),
            async_operation: None,
            retry_after: None,
            body: None,
        };
        assert_eq!(a.job_name().as_deref(), Some("abc"));
        let b = Accepted {
            location: Some("https://h/vaults/v/operationresults/j-1?api-version=x".into()),
            ..a
        };
        assert_eq!(b.job_name().as_deref(), Some("j-1"));
    }

    #[test]
    fn polling_honours_retry_after_and_backs_off() {
        let p = PollPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(0))), p.floor);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(9999))),
            p.max_retry_after
        );
        assert_eq!(p.delay(0, None), Duration::from_secs(1));
        assert_eq!(p.delay(2, None), Duration::from_secs(4));
        assert_eq!(p.delay(10, None), p.max);
    }

    #[test]
    fn job_paths_use_the_last_segment() {
        let c = client("https://management.azure.com");
        assert_eq!(
            c.job_path("/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/j-9"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/j-9"
        );
    }
}

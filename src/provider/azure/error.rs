//! Errors of the Azure provider, and how Site Recovery's error bodies become
//! messages that name the cause and the recommended action.
//!
//! Site Recovery does not use the standard Resource Manager error schema
//! (asr-api.md, section 4): a rejected call answers
//! `{"error": {"code", "message", "possibleCauses"?, "recommendedAction"?,
//! "details"?: [{"code", "message", "possibleCauses", "recommendedAction",
//! "activityId"}]}}`, and a failed job carries `errors[]` of
//! `serviceErrorDetails` {code, message, possibleCauses, recommendedAction}
//! and `providerErrorDetails` {errorCode, errorMessage, possibleCauses,
//! recommendedAction}. Both are rendered by [`AsrErrorDetail`].

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::provider::ProviderError;

/// How a caller should treat an error (the `Provider` contract's classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, a server error, a timeout, a connection that failed:
    /// retry after re-observing.
    Transient,
    /// The operation does not apply in the item's current state (409, or an
    /// operation Site Recovery does not allow now): re-observe, decide again.
    Conflict,
    /// Terminal for this VM in this run.
    Failed,
}

/// An error of the Azure provider: its class, a full message, and the HTTP
/// status when one was received.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct AzureError {
    pub class: ErrorClass,
    pub message: String,
    pub status: Option<u16>,
    /// `Retry-After` of a throttled or failed response.
    pub retry_after: Option<Duration>,
}

impl AzureError {
    pub fn new(class: ErrorClass, message: String) -> AzureError {
        AzureError {
            class,
            message,
            status: None,
            retry_after: None,
        }
    }

    pub fn config(message: String) -> AzureError {
        AzureError::new(ErrorClass::Failed, message)
    }

    pub fn failed(message: String) -> AzureError {
        AzureError::new(ErrorClass::Failed, message)
    }

    pub fn conflict(message: String) -> AzureError {
        AzureError::new(ErrorClass::Conflict, message)
    }

    pub fn transient(message: String) -> AzureError {
        AzureError::new(ErrorClass::Transient, message)
    }

    /// An error response of `what` (e.g. "plannedFailover of VM 'db-01'").
    ///
    /// 408, 429 and 5xx are transient; 409 is a conflict; 401 and 403 name
    /// the permission to grant; any other 4xx is terminal, with Site
    /// Recovery's message and recommended action.
    pub fn from_response(
        what: &str,
        status: u16,
        body: &str,
        retry_after: Option<Duration>,
    ) -> AzureError {
        let details = parse_error_body(body);
        let asr = if details.is_empty() {
            let text = body.trim();
            if text.is_empty() {
                String::new()
            } else {
                format!(": {}", truncate(text, 400))
            }
        } else {
            let rendered: Vec<String> = details.iter().map(ToString::to_string).collect();
            format!(": {}", rendered.join(" "))
        };
        let (class, advice) = match status {
            408 | 429 | 500..=599 => (
                ErrorClass::Transient,
                " (Azure is busy or unavailable; retried with backoff)",
            ),
            409 => (ErrorClass::Conflict, ""),
            401 => (
                ErrorClass::Failed,
                " (the credential was refused: check FAILBACK_AZURE_TOKEN or the AZURE_* \
                 variables, `az login`, or the managed identity; docs/azure.md, \"Credentials\")",
            ),
            403 => (
                ErrorClass::Failed,
                " (the identity lacks a permission on the vault: grant it the role in \
                 docs/azure.md, \"Permissions\")",
            ),
            _ => (ErrorClass::Failed, ""),
        };
        let code = details
            .first()
            .map(|d| format!(", {}", d.code))
            .unwrap_or_default();
        AzureError {
            class,
            message: format!("Site Recovery refused {what} (HTTP {status}{code}){asr}{advice}"),
            status: Some(status),
            retry_after,
        }
    }
}

impl From<AzureError> for ProviderError {
    fn from(e: AzureError) -> Self {
        match e.class {
            ErrorClass::Transient => ProviderError::Transient(e.message),
            ErrorClass::Conflict => ProviderError::Conflict(e.message),
            ErrorClass::Failed => ProviderError::Failed(e.message),
        }
    }
}

/// One Site Recovery error: a service error, a provider (on-premises
/// component) error, or an entry of an error response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsrErrorDetail {
    pub code: String,
    pub message: String,
    pub possible_causes: Option<String>,
    pub recommended_action: Option<String>,
}

impl fmt::Display for AsrErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message.trim();
        if self.code.is_empty() {
            write!(f, "{}", sentence(message))?;
        } else {
            write!(f, "{}: {}", self.code, sentence(message))?;
        }
        if let Some(c) = self
            .possible_causes
            .as_deref()
            .filter(|c| !c.trim().is_empty())
        {
            write!(f, " Possible causes: {}", sentence(c.trim()))?;
        }
        if let Some(a) = self
            .recommended_action
            .as_deref()
            .filter(|a| !a.trim().is_empty())
        {
            write!(f, " Recommended action: {}", sentence(a.trim()))?;
        }
        Ok(())
    }
}

/// `text` ending with a full stop.
fn sentence(text: &str) -> String {
    if text.ends_with(['.', '!', '?']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    possible_causes: Option<String>,
    #[serde(default)]
    recommended_action: Option<String>,
    #[serde(default)]
    details: Vec<RawError>,
}

impl RawError {
    fn detail(&self) -> AsrErrorDetail {
        AsrErrorDetail {
            code: self.code.clone().unwrap_or_default(),
            message: self.message.clone().unwrap_or_default(),
            possible_causes: self.possible_causes.clone(),
            recommended_action: self.recommended_action.clone(),
        }
    }
}

/// The errors of a response body: the top-level error, then each entry of
/// `details` that adds something. The outer error of Site Recovery is often
/// generic ("The operation has failed."), the detail the useful one, so a
/// generic outer error without causes or action is dropped when details exist.
pub fn parse_error_body(body: &str) -> Vec<AsrErrorDetail> {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let inner = value.get("error").cloned().unwrap_or(value);
    let Ok(raw) = serde_json::from_value::<RawError>(inner) else {
        return Vec::new();
    };
    if raw.code.is_none() && raw.message.is_none() && raw.details.is_empty() {
        return Vec::new();
    }
    let outer = raw.detail();
    let details: Vec<AsrErrorDetail> = raw.details.iter().map(RawError::detail).collect();
    let mut out = Vec::new();
    let outer_is_generic = outer.possible_causes.is_none() && outer.recommended_action.is_none();
    if details.is_empty() || !outer_is_generic {
        out.push(outer);
    }
    out.extend(details);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a user got calling the REST API directly (asr-api.md [S24]).
    const S24: &str = r#"{"error":{"code":"BadRequest","message":"The operation has failed.","details":[{"code":"InvalidChannelIntegrityKeyToken","message":"The channel integrity key token is invalid.","possibleCauses":"The token has expired.","recommendedAction":"Retry the operation.","clientRequestId":"x","activityId":"y"}]}}"#;

    #[test]
    fn a_400_names_the_code_the_cause_and_the_action() {
        let e = AzureError::from_response("plannedFailover of VM 'db-01'", 400, S24, None);
        assert_eq!(e.class, ErrorClass::Failed);
        assert_eq!(
            e.message,
            "Site Recovery refused plannedFailover of VM 'db-01' (HTTP 400, InvalidChannelIntegrityKeyToken): \
             InvalidChannelIntegrityKeyToken: The channel integrity key token is invalid. \
             Possible causes: The token has expired. Recommended action: Retry the operation."
        );
    }

    #[test]
    fn statuses_map_to_the_contract_classes() {
        let class = |s| AzureError::from_response("x", s, "", None).class;
        assert_eq!(class(429), ErrorClass::Transient);
        assert_eq!(class(503), ErrorClass::Transient);
        assert_eq!(class(409), ErrorClass::Conflict);
        assert_eq!(class(404), ErrorClass::Failed);
        assert!(
            AzureError::from_response("x", 403, "", None)
                .message
                .contains("Permissions")
        );
    }

    #[test]
    fn bodies_without_details_or_not_json_are_kept() {
        let d = parse_error_body(r#"{"error":{"code":"InvalidParameter","message":"bad"}}"#);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to_string(), "InvalidParameter: bad.");
        let e = AzureError::from_response("x", 400, "<html>oops</html>", None);
        assert!(e.message.ends_with(": <html>oops</html>"), "{}", e.message);
    }
}

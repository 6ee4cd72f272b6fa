//! Configuration of the Azure provider: which vault, which Resource Manager
//! endpoint, which api-version. Parsing only; no I/O.

use std::fmt;

use reqwest::Url;

use super::error::AzureError;

/// The public cloud's Resource Manager endpoint.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";

/// The Site Recovery api-version sent on every call unless overridden.
///
/// 2025-08-01: the version whose TypeSpec models and recorded examples
/// `asr-api.md` checked field by field (its paths and long-running-operation
/// options are unchanged in the newer 2026-05-01 default tag).
pub const DEFAULT_API_VERSION: &str = "2025-08-01";

/// A Recovery Services vault's resource ID:
/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{v}`.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultId {
    path: String,
    subscription: String,
    resource_group: String,
    name: String,
}

impl VaultId {
    /// Parses a vault resource ID (the fixed segments are matched without
    /// regard to case, as Resource Manager does).
    ///
    /// Errors: anything else, with the expected shape in the message.
    pub fn parse(text: &str) -> Result<VaultId, AzureError> {
        let bad = || {
            AzureError::config(format!(
                "'{text}' is not a Recovery Services vault resource ID; expected \
                 /subscriptions/SUBSCRIPTION/resourceGroups/GROUP/providers/Microsoft.RecoveryServices/vaults/VAULT"
            ))
        };
        let trimmed = text.trim().trim_end_matches('/');
        let parts: Vec<&str> = trimmed.split('/').collect();
        let [
            "",
            subscriptions,
            subscription,
            groups,
            resource_group,
            providers,
            namespace,
            vaults,
            name,
        ] = parts.as_slice()
        else {
            return Err(bad());
        };
        let fixed = [
            (subscriptions, "subscriptions"),
            (groups, "resourceGroups"),
            (providers, "providers"),
            (namespace, "Microsoft.RecoveryServices"),
            (vaults, "vaults"),
        ];
        if fixed
            .iter()
            .any(|(got, want)| !got.eq_ignore_ascii_case(want))
            || [subscription, resource_group, name]
                .iter()
                .any(|s| s.is_empty() || s.contains(['?', '#', ' ']))
        {
            return Err(bad());
        }
        Ok(VaultId {
            path: format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.RecoveryServices/vaults/{name}"
            ),
            subscription: (*subscription).to_owned(),
            resource_group: (*resource_group).to_owned(),
            name: (*name).to_owned(),
        })
    }

    /// The resource ID, canonical spelling of the fixed segments.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `id` (an ARM ID returned by the service) lies inside this vault.
    pub fn contains(&self, id: &str) -> bool {
        id.len() > self.path.len()
            && id.is_char_boundary(self.path.len())
            && id[..self.path.len()].eq_ignore_ascii_case(&self.path)
            && id[self.path.len()..].starts_with('/')
    }
}

impl fmt::Display for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl fmt::Debug for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultId({})", self.path)
    }
}

/// Everything the Azure provider needs besides a credential.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    pub vault: VaultId,
    /// Resource Manager endpoint (no path).
    pub arm_endpoint: Url,
    pub api_version: String,
    /// `Get-VMSwitch | Select Name, ComputerName | ConvertTo-Json` exported
    /// from the hosts: the only source of vSwitch names.
    pub hyperv_inventory: Option<std::path::PathBuf>,
}

impl AzureConfig {
    /// Checks and combines the settings. The vault comes from the plan
    /// (`spec.recovery.vault`) or the command line; when both are given they
    /// must agree, so that an environment variable left over from another
    /// project never redirects a run to another vault.
    ///
    /// Errors: no vault, two different vaults, a malformed vault ID,
    /// endpoint or api-version.
    pub fn new(
        plan_vault: Option<&str>,
        flag_vault: Option<&str>,
        arm_endpoint: &str,
        api_version: &str,
        hyperv_inventory: Option<std::path::PathBuf>,
    ) -> Result<AzureConfig, AzureError> {
        let vault = match (plan_vault, flag_vault) {
            (None, None) => {
                return Err(AzureError::config(
                    "no Recovery Services vault: set `spec.recovery.vault` in the plan, or pass \
                     --vault (FAILBACK_AZURE_VAULT)"
                        .to_owned(),
                ));
            }
            (Some(p), Some(f)) => {
                let (p, f) = (VaultId::parse(p)?, VaultId::parse(f)?);
                if !p.path().eq_ignore_ascii_case(f.path()) {
                    return Err(AzureError::config(format!(
                        "the plan names vault '{p}' but --vault (FAILBACK_AZURE_VAULT) names '{f}'; \
                         remove one of them or make them agree"
                    )));
                }
                p
            }
            (Some(v), None) | (None, Some(v)) => VaultId::parse(v)?,
        };
        Ok(AzureConfig {
            vault,
            arm_endpoint: parse_endpoint(arm_endpoint)?,
            api_version: parse_api_version(api_version)?,
            hyperv_inventory,
        })
    }
}

/// A Resource Manager endpoint: `https://HOST[:PORT]`, or plain `http` on a
/// loopback address only (the emulator), so that a bearer token never
/// crosses a network in clear text.
pub fn parse_endpoint(text: &str) -> Result<Url, AzureError> {
    let url = Url::parse(text.trim()).map_err(|e| {
        AzureError::config(format!(
            "--arm-endpoint '{text}' is not a URL ({e}); expected for example {DEFAULT_ARM_ENDPOINT}"
        ))
    })?;
    let loopback = is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(AzureError::config(format!(
                "--arm-endpoint '{text}' uses plain http on a non-loopback address; use https \
                 (plain http is accepted only on 127.0.0.1, ::1 or localhost, for the emulator)"
            )));
        }
        other => {
            return Err(AzureError::config(format!(
                "--arm-endpoint '{text}' has scheme '{other}'; expected https"
            )));
        }
    }
    if url.host_str().is_none()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err(AzureError::config(format!(
            "--arm-endpoint '{text}' must be a bare origin such as {DEFAULT_ARM_ENDPOINT} (no path, query or user)"
        )));
    }
    Ok(url)
}

/// Whether the URL's host is a loopback address.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

fn parse_api_version(text: &str) -> Result<String, AzureError> {
    let t = text.trim();
    let (date, rest) = t.split_at(t.len().min(10));
    let ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
        && (rest.is_empty() || rest == "-preview");
    if ok {
        Ok(t.to_owned())
    } else {
        Err(AzureError::config(format!(
            "--api-version '{text}' is not an api-version; expected YYYY-MM-DD or YYYY-MM-DD-preview \
             (default {DEFAULT_API_VERSION})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "/subscriptions/0000/resourceGroups/rg-dr/providers/Microsoft.RecoveryServices/vaults/vault-1";

    #[test]
    fn vault_ids_parse_and_contain_their_children() {
        let v = VaultId::parse(&VAULT.to_lowercase()).unwrap();
        assert_eq!(
            v.path(),
            "/subscriptions/0000/resourceGroups/rg-dr/providers/Microsoft.RecoveryServices/vaults/vault-1"
        );
        assert_eq!(v.name(), "vault-1");
        assert!(v.contains(&format!("{VAULT}/replicationJobs/x")));
        assert!(!v.contains(&format!("{VAULT}-2/replicationJobs/x")));
        assert!(VaultId::parse("/subscriptions/0000/resourceGroups/rg").is_err());
        assert!(VaultId::parse(&VAULT.replace("vaults", "things")).is_err());
    }

    #[test]
    fn plan_and_flag_vaults_must_agree() {
        let other = VAULT.replace("vault-1", "vault-2");
        let e = AzureConfig::new(
            Some(VAULT),
            Some(&other),
            DEFAULT_ARM_ENDPOINT,
            "2025-08-01",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("make them agree"), "{e}");
        assert!(
            AzureConfig::new(None, None, DEFAULT_ARM_ENDPOINT, "2025-08-01", None)
                .unwrap_err()
                .to_string()
                .contains("spec.recovery.vault")
        );
        let c = AzureConfig::new(
            Some(VAULT),
            Some(VAULT),
            DEFAULT_ARM_ENDPOINT,
            "2025-08-01",
            None,
        )
        .unwrap();
        assert_eq!(c.vault.name(), "vault-1");
    }

    #[test]
    fn endpoints_are_https_or_loopback_http() {
        assert!(parse_endpoint("https://management.usgovcloudapi.net").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(parse_endpoint("http://[::1]:8080/").is_ok());
        assert!(parse_endpoint("http://example.com").is_err());
        assert!(parse_endpoint("https://example.com/some/path").is_err());
        assert!(parse_endpoint("ftp://127.0.0.1").is_err());
    }

    #[test]
    fn api_versions_are_dates() {
        assert!(parse_api_version("2026-03-31-preview").is_ok());
        assert!(parse_api_version("2025-08-01").is_ok());
        assert!(parse_api_version("latest").is_err());
        assert!(parse_api_version("2025-8-1").is_err());
    }
}

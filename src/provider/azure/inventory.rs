//! The Hyper-V inventory file: vSwitch names per host, exported on the
//! hosts, since Site Recovery does not expose them.
//!
//! ```powershell
//! Get-VMSwitch -ComputerName hv-01, hv-02 | Select Name, ComputerName | ConvertTo-Json > inventory.json
//! ```
//!
//! The file is a JSON array of `{"Name": ..., "ComputerName": ...}` (or one
//! such object, which is what `ConvertTo-Json` prints for a single switch),
//! in UTF-8 or, as Windows PowerShell 5.1 redirects it, UTF-16 with a BOM.
//! Host names match without regard to case, and a fully qualified name
//! matches its first label (`HV-01.contoso.local` is `hv-01`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::AzureError;

/// vSwitch names by host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HypervInventory {
    hosts: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Switch>),
    One(Switch),
}

#[derive(Deserialize)]
struct Switch {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ComputerName")]
    computer_name: String,
}

/// The key a host name is stored and looked up under.
pub fn host_key(name: &str) -> String {
    name.trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

impl HypervInventory {
    /// Reads the file.
    ///
    /// Errors: it cannot be read, or is not the JSON above.
    pub fn load(path: &Path) -> Result<HypervInventory, AzureError> {
        let bytes = std::fs::read(path).map_err(|e| {
            AzureError::config(format!(
                "cannot read the Hyper-V inventory {}: {e}",
                path.display()
            ))
        })?;
        let text = decode(&bytes).ok_or_else(|| {
            AzureError::config(format!(
                "the Hyper-V inventory {} is neither UTF-8 nor UTF-16 with a BOM",
                path.display()
            ))
        })?;
        HypervInventory::parse(&text).map_err(|e| {
            AzureError::config(format!(
                "the Hyper-V inventory {} is not the output of `Get-VMSwitch | Select Name, \
                 ComputerName | ConvertTo-Json`: {e}",
                path.display()
            ))
        })
    }

    /// Parses the JSON text.
    ///
    /// Errors: not an array of (or a single) `{Name, ComputerName}` object.
    pub fn parse(text: &str) -> Result<HypervInventory, serde_json::Error> {
        let switches = match serde_json::from_str::<OneOrMany>(text)? {
            OneOrMany::Many(v) => v,
            OneOrMany::One(s) => vec![s],
        };
        let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in switches {
            let list = hosts.entry(host_key(&s.computer_name)).or_default();
            if !list.contains(&s.name) {
                list.push(s.name);
            }
        }
        Ok(HypervInventory { hosts })
    }

    /// The vSwitches of `host`; `None` when the file does not list it.
    pub fn vswitches(&self, host: &str) -> Option<Vec<String>> {
        self.hosts.get(&host_key(host)).cloned()
    }
}

fn decode(bytes: &[u8]) -> Option<String> {
    let utf16 = |rest: &[u8], le: bool| {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).ok()
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).ok(),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        _ => String::from_utf8(bytes.to_vec()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_powershell_export() {
        let inv = HypervInventory::parse(
            r#"[{"Name":"Production","ComputerName":"HV-01"},
                {"Name":"Backup","ComputerName":"hv-01.contoso.local"},
                {"Name":"Production","ComputerName":"HV-02"}]"#,
        )
        .unwrap();
        assert_eq!(
            inv.vswitches("hv-01"),
            Some(vec!["Production".to_owned(), "Backup".to_owned()])
        );
        assert_eq!(
            inv.vswitches("HV-02.contoso.local"),
            Some(vec!["Production".to_owned()])
        );
        assert_eq!(inv.vswitches("hv-03"), None);
    }

    #[test]
    fn a_single_switch_is_one_object_and_utf16_is_read() {
        let text = r#"{"Name":"Production","ComputerName":"HV-01"}"#;
        let mut bytes = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let inv = HypervInventory::parse(&decode(&bytes).unwrap()).unwrap();
        assert_eq!(inv.vswitches("hv-01"), Some(vec!["Production".to_owned()]));
        assert!(HypervInventory::parse(r#"{"name":"x"}"#).is_err());
    }
}

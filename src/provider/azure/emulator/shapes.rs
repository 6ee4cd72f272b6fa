//! Request bodies checked against the published shapes (asr-api.md,
//! sections 1 and 2): required fields, field types, enum values and
//! unknown fields, each mismatch answered with a Site Recovery-style 400.

use serde_json::{Map, Value};

use crate::provider::azure::models::{
    DataSyncOption, HyperVReplicaAzureFailbackProviderInput, HyperVReplicaAzureReprotectInput,
    RecoveryVmCreationOption,
};

/// A rejected request: HTTP status, Site Recovery error code, message,
/// possible causes and recommended action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub possible_causes: String,
    pub recommended_action: String,
}

impl Rejection {
    pub fn invalid(message: String, action: String) -> Rejection {
        Rejection {
            status: 400,
            code: "InvalidParameter",
            message,
            possible_causes:
                "The request body does not match the published shape of the operation.".to_owned(),
            recommended_action: action,
        }
    }

    pub fn conflict(message: String, action: String) -> Rejection {
        Rejection {
            status: 409,
            code: "OperationNotAllowedInCurrentState",
            message,
            possible_causes:
                "The protected item or job is not in a state that allows this operation.".to_owned(),
            recommended_action: action,
        }
    }

    pub fn not_found(message: String) -> Rejection {
        Rejection {
            status: 404,
            code: "ResourceNotFound",
            message,
            possible_causes: "The resource does not exist in this vault.".to_owned(),
            recommended_action: "Check the resource name and the vault.".to_owned(),
        }
    }
}

const FAILOVER_DIRECTIONS: &[&str] = &["PrimaryToRecovery", "RecoveryToPrimary"];
const DATA_SYNC: &[&str] = &["ForDownTime", "ForSynchronization"];
const VM_CREATION: &[&str] = &["CreateVmIfNotFound", "NoAction"];
/// `PlannedFailoverProviderSpecificFailoverInput` union members.
const PLANNED_FAILOVER_INPUTS: &[&str] = &[
    "HyperVReplicaAzureFailback",
    "HyperVReplicaAzure",
    "InMageRcmFailback",
];
/// `ReverseReplicationProviderSpecificInput` union members.
const REPROTECT_INPUTS: &[&str] = &[
    "A2A",
    "HyperVReplicaAzure",
    "InMageAzureV2",
    "InMage",
    "InMageRcm",
    "InMageRcmFailback",
];

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Rejection> {
    value.as_object().ok_or_else(|| {
        Rejection::invalid(
            format!("'{at}' must be a JSON object."),
            format!("Send '{at}' as an object."),
        )
    })
}

fn only(map: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), Rejection> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Rejection::invalid(
            format!("'{at}' has an unknown field '{k}'."),
            format!(
                "Remove it; the fields of '{at}' are: {}.",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn required<'a>(
    map: &'a Map<String, Value>,
    at: &str,
    field: &str,
) -> Result<&'a Value, Rejection> {
    map.get(field).filter(|v| !v.is_null()).ok_or_else(|| {
        Rejection::invalid(
            format!("The required field '{at}.{field}' is missing."),
            format!("Send '{at}.{field}'."),
        )
    })
}

fn string<'a>(value: &'a Value, at: &str) -> Result<&'a str, Rejection> {
    value.as_str().ok_or_else(|| {
        Rejection::invalid(
            format!("'{at}' must be a string."),
            format!("Send '{at}' as a string."),
        )
    })
}

fn optional_string(
    map: &Map<String, Value>,
    at: &str,
    field: &str,
) -> Result<Option<String>, Rejection> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string(v, &format!("{at}.{field}")).map(|s| Some(s.to_owned())),
    }
}

fn one_of<'a>(value: &'a Value, at: &str, allowed: &[&str]) -> Result<&'a str, Rejection> {
    let text = string(value, at)?;
    if allowed.contains(&text) {
        Ok(text)
    } else {
        Err(Rejection::invalid(
            format!("'{text}' is not a valid value of '{at}'."),
            format!("Use one of: {} (spelled exactly).", allowed.join(", ")),
        ))
    }
}

/// The body of an action that takes none (`failoverCommit`): empty or `{}`.
pub fn no_body(body: &[u8], operation: &str) -> Result<(), Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if m.is_empty() => Ok(()),
        _ => Err(Rejection::invalid(
            format!("'{operation}' takes no request body."),
            "Send the request without a body.".to_owned(),
        )),
    }
}

fn json(body: &[u8], parameter: &str) -> Result<Value, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::invalid(
            format!("The request body '{parameter}' is required."),
            format!("Send '{parameter}' as the JSON body."),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Rejection::invalid(
            format!("The request body is not valid JSON: {e}."),
            "Send a JSON body.".to_owned(),
        )
    })
}

/// The envelope that planned failover and reprotect share: `properties`
/// with only `failoverDirection` (one of [`FAILOVER_DIRECTIONS`]) and
/// `providerSpecificDetails`, whose `instanceType` is one of `instances`.
struct Directed<'a> {
    direction: &'a str,
    /// Where the provider input sits, for messages.
    at: &'static str,
    details: &'a Map<String, Value>,
    instance: &'a str,
}

fn directed<'a>(
    value: &'a Value,
    root: &str,
    instances: &[&str],
) -> Result<Directed<'a>, Rejection> {
    let top = object(value, root)?;
    only(top, root, &["properties"])?;
    let props = object(required(top, root, "properties")?, "properties")?;
    only(
        props,
        "properties",
        &["failoverDirection", "providerSpecificDetails"],
    )?;
    let direction = one_of(
        required(props, "properties", "failoverDirection")?,
        "properties.failoverDirection",
        FAILOVER_DIRECTIONS,
    )?;
    let at = "properties.providerSpecificDetails";
    let details = object(
        required(props, "properties", "providerSpecificDetails")?,
        at,
    )?;
    let instance = one_of(
        required(details, at, "instanceType")?,
        &format!("{at}.instanceType"),
        instances,
    )?;
    Ok(Directed {
        direction,
        at,
        details,
        instance,
    })
}

/// `PlannedFailoverInput` for a failback: `properties.failoverDirection`
/// (RecoveryToPrimary) and a `HyperVReplicaAzureFailback` provider input
/// with both options spelled out (their service defaults are unpublished).
pub fn planned_failover(body: &[u8]) -> Result<HyperVReplicaAzureFailbackProviderInput, Rejection> {
    let value = json(body, "failoverInput")?;
    let Directed {
        direction,
        at,
        details,
        instance,
    } = directed(&value, "failoverInput", PLANNED_FAILOVER_INPUTS)?;
    if instance != "HyperVReplicaAzureFailback" || direction != "RecoveryToPrimary" {
        return Err(Rejection::invalid(
            format!(
                "A failback of a Hyper-V virtual machine from Azure needs failoverDirection \
                 'RecoveryToPrimary' with instanceType 'HyperVReplicaAzureFailback' (got '{direction}' \
                 with '{instance}')."
            ),
            "Send failoverDirection 'RecoveryToPrimary' and a 'HyperVReplicaAzureFailback' provider input."
                .to_owned(),
        ));
    }
    only(
        details,
        at,
        &[
            "instanceType",
            "dataSyncOption",
            "recoveryVmCreationOption",
            "providerIdForAlternateRecovery",
        ],
    )?;
    let sync = match one_of(
        required(details, at, "dataSyncOption")?,
        &format!("{at}.dataSyncOption"),
        DATA_SYNC,
    )? {
        "ForDownTime" => DataSyncOption::ForDownTime,
        _ => DataSyncOption::ForSynchronization,
    };
    let creation = match one_of(
        required(details, at, "recoveryVmCreationOption")?,
        &format!("{at}.recoveryVmCreationOption"),
        VM_CREATION,
    )? {
        "CreateVmIfNotFound" => RecoveryVmCreationOption::CreateVmIfNotFound,
        _ => RecoveryVmCreationOption::NoAction,
    };
    Ok(HyperVReplicaAzureFailbackProviderInput {
        instance_type: instance.to_owned(),
        data_sync_option: sync,
        recovery_vm_creation_option: creation,
        provider_id_for_alternate_recovery: optional_string(
            details,
            at,
            "providerIdForAlternateRecovery",
        )?,
    })
}

/// `ReverseReplicationInput` after a failback: `PrimaryToRecovery` with a
/// `HyperVReplicaAzure` reprotect input.
pub fn reprotect(body: &[u8]) -> Result<HyperVReplicaAzureReprotectInput, Rejection> {
    let value = json(body, "input")?;
    let Directed {
        direction,
        at,
        details,
        instance,
    } = directed(&value, "input", REPROTECT_INPUTS)?;
    if instance != "HyperVReplicaAzure" || direction != "PrimaryToRecovery" {
        return Err(Rejection::invalid(
            format!(
                "Protecting a Hyper-V virtual machine again after failback needs failoverDirection \
                 'PrimaryToRecovery' with instanceType 'HyperVReplicaAzure' (got '{direction}' with \
                 '{instance}')."
            ),
            "Send failoverDirection 'PrimaryToRecovery' and a 'HyperVReplicaAzure' provider input."
                .to_owned(),
        ));
    }
    only(
        details,
        at,
        &[
            "instanceType",
            "hvHostVmId",
            "vmName",
            "osType",
            "vHDId",
            "storageAccountId",
            "logStorageAccountId",
        ],
    )?;
    let os_type = optional_string(details, at, "osType")?;
    if let Some(os) = &os_type
        && !["Windows", "Linux"].contains(&os.as_str())
    {
        return Err(Rejection::invalid(
            format!("'{os}' is not a valid value of '{at}.osType'."),
            "Use Windows or Linux.".to_owned(),
        ));
    }
    Ok(HyperVReplicaAzureReprotectInput {
        instance_type: instance.to_owned(),
        hv_host_vm_id: optional_string(details, at, "hvHostVmId")?,
        vm_name: optional_string(details, at, "vmName")?,
        os_type,
        v_hd_id: optional_string(details, at, "vHDId")?,
        storage_account_id: optional_string(details, at, "storageAccountId")?,
        log_storage_account_id: optional_string(details, at, "logStorageAccountId")?,
    })
}

/// `ResumeJobParams` (optional): `{properties?: {comments?: string}}`.
pub fn resume(body: &[u8]) -> Result<Option<String>, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = json(body, "resumeJobParams")?;
    let top = object(&value, "resumeJobParams")?;
    only(top, "resumeJobParams", &["properties"])?;
    match top.get("properties") {
        None | Some(Value::Null) => Ok(None),
        Some(p) => {
            let props = object(p, "properties")?;
            only(props, "properties", &["comments"])?;
            optional_string(props, "properties", "comments")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::azure::models::{PlannedFailoverInput, ReverseReplicationInput};

    #[test]
    fn the_provider_bodies_pass() {
        let body = serde_json::to_vec(&PlannedFailoverInput::failback(
            DataSyncOption::ForDownTime,
            RecoveryVmCreationOption::NoAction,
            None,
        ))
        .unwrap();
        assert!(planned_failover(&body).is_ok());
        let body =
            serde_json::to_vec(&ReverseReplicationInput::hyperv_to_azure(Default::default()))
                .unwrap();
        assert!(reprotect(&body).is_ok());
        assert_eq!(resume(b"").unwrap(), None);
        assert_eq!(
            resume(br#"{"properties":{"comments":"go"}}"#)
                .unwrap()
                .as_deref(),
            Some("go")
        );
        assert!(no_body(b"{}", "failoverCommit").is_ok());
    }

    #[test]
    fn mismatches_name_the_field_and_the_allowed_values() {
        let typo = br#"{"properties":{"failoverDirection":"RecoveryToPrimary","providerSpecificDetails":
            {"instanceType":"HyperVReplicaAzureFailback","dataSyncOption":"ForSyncronization","recoveryVmCreationOption":"NoAction"}}}"#;
        let e = planned_failover(typo).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.code, "InvalidParameter");
        assert!(e.message.contains("'ForSyncronization'"), "{e:?}");
        assert!(
            e.recommended_action
                .contains("ForDownTime, ForSynchronization")
        );

        let missing = br#"{"properties":{"failoverDirection":"RecoveryToPrimary"}}"#;
        assert!(
            planned_failover(missing)
                .unwrap_err()
                .message
                .contains("providerSpecificDetails")
        );
        let unknown = br#"{"properties":{"failoverDirection":"RecoveryToPrimary","x":1}}"#;
        assert!(
            planned_failover(unknown)
                .unwrap_err()
                .message
                .contains("unknown field 'x'")
        );
        assert!(
            planned_failover(b"")
                .unwrap_err()
                .message
                .contains("failoverInput")
        );
        let wrong_way = br#"{"properties":{"failoverDirection":"RecoveryToPrimary","providerSpecificDetails":{"instanceType":"HyperVReplicaAzureFailback"}}}"#;
        assert!(reprotect(wrong_way).is_err());
        assert!(no_body(b"{\"a\":1}", "failoverCommit").is_err());
    }
}

//! The Site Recovery REST shapes the provider sends and reads (asr-api.md,
//! sections 1 to 4), as serde types. Request bodies are exact; response
//! types are lenient (every field optional, unknown fields ignored), since
//! the service's vocabulary is only partly documented.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `failoverDirection` (`PossibleOperationsDirections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailoverDirection {
    PrimaryToRecovery,
    RecoveryToPrimary,
}

/// `dataSyncOption` (`DataSyncStatus`): delta or full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataSyncOption {
    /// Synchronise before failover (delta); the job suspends after phase 1.
    ForDownTime,
    /// Synchronise during failover only (full download).
    ForSynchronization,
}

/// `recoveryVmCreationOption` (`AlternateLocationRecoveryOption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryVmCreationOption {
    CreateVmIfNotFound,
    NoAction,
}

/// Body of `POST .../replicationProtectedItems/{item}/plannedFailover`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedFailoverInput {
    pub properties: PlannedFailoverInputProperties,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedFailoverInputProperties {
    pub failover_direction: FailoverDirection,
    pub provider_specific_details: HyperVReplicaAzureFailbackProviderInput,
}

/// `HyperVReplicaAzureFailbackProviderInput`: the failback provider input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HyperVReplicaAzureFailbackProviderInput {
    /// Always [`FAILBACK_INSTANCE_TYPE`].
    pub instance_type: String,
    pub data_sync_option: DataSyncOption,
    pub recovery_vm_creation_option: RecoveryVmCreationOption,
    /// The ARM ID of the recovery services provider (host) to create the VM
    /// on (alternate location, Hyper-V sites only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id_for_alternate_recovery: Option<String>,
}

/// `instanceType` of the failback provider input.
pub const FAILBACK_INSTANCE_TYPE: &str = "HyperVReplicaAzureFailback";
/// `instanceType` of the Hyper-V to Azure reprotect input.
pub const REPROTECT_INSTANCE_TYPE: &str = "HyperVReplicaAzure";

impl PlannedFailoverInput {
    /// A failback (`RecoveryToPrimary`) of one Hyper-V VM.
    pub fn failback(
        sync: DataSyncOption,
        creation: RecoveryVmCreationOption,
        provider_id_for_alternate_recovery: Option<String>,
    ) -> PlannedFailoverInput {
        PlannedFailoverInput {
            properties: PlannedFailoverInputProperties {
                failover_direction: FailoverDirection::RecoveryToPrimary,
                provider_specific_details: HyperVReplicaAzureFailbackProviderInput {
                    instance_type: FAILBACK_INSTANCE_TYPE.to_owned(),
                    data_sync_option: sync,
                    recovery_vm_creation_option: creation,
                    provider_id_for_alternate_recovery,
                },
            },
        }
    }
}

/// Body of `POST .../replicationProtectedItems/{item}/reProtect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReverseReplicationInput {
    pub properties: ReverseReplicationInputProperties,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReverseReplicationInputProperties {
    pub failover_direction: FailoverDirection,
    pub provider_specific_details: HyperVReplicaAzureReprotectInput,
}

/// `HyperVReplicaAzureReprotectInput`; what PowerShell fills in after a
/// failback (asr-api.md, section 2), each field only when the item tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HyperVReplicaAzureReprotectInput {
    pub instance_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hv_host_vm_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    #[serde(default, rename = "vHDId", skip_serializing_if = "Option::is_none")]
    pub v_hd_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_storage_account_id: Option<String>,
}

impl ReverseReplicationInput {
    /// Protect again, primary towards recovery (Hyper-V to Azure).
    pub fn hyperv_to_azure(details: HyperVReplicaAzureReprotectInput) -> ReverseReplicationInput {
        ReverseReplicationInput {
            properties: ReverseReplicationInputProperties {
                failover_direction: FailoverDirection::PrimaryToRecovery,
                provider_specific_details: HyperVReplicaAzureReprotectInput {
                    instance_type: REPROTECT_INSTANCE_TYPE.to_owned(),
                    ..details
                },
            },
        }
    }
}

/// Body of `POST .../replicationJobs/{job}/resume` (`ResumeJobParams`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeJobParams {
    pub properties: ResumeJobParamsProperties,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeJobParamsProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
}

/// A page of a list operation.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

/// A replication protected item (RPI).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedItem {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub properties: ProtectedItemProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedItemProperties {
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub protection_state: Option<String>,
    #[serde(default)]
    pub protection_state_description: Option<String>,
    #[serde(default)]
    pub active_location: Option<String>,
    #[serde(default)]
    pub allowed_operations: Vec<String>,
    #[serde(default)]
    pub current_scenario: Option<CurrentScenario>,
    #[serde(default)]
    pub recovery_services_provider_id: Option<String>,
    #[serde(default)]
    pub primary_fabric_friendly_name: Option<String>,
    #[serde(default)]
    pub last_successful_failover_time: Option<String>,
    #[serde(default)]
    pub failover_recovery_point_id: Option<String>,
    #[serde(default)]
    pub provider_specific_details: Option<Value>,
}

impl ProtectedItemProperties {
    pub fn allows(&self, operation: &str) -> bool {
        self.allowed_operations
            .iter()
            .any(|o| o.eq_ignore_ascii_case(operation))
    }

    /// The job the item runs now, if any. `None` for the idle sentinel
    /// (`scenarioName: "None"`, `jobId: ".../replicationJobs/None"`).
    pub fn current_job_id(&self) -> Option<&str> {
        let scenario = self.current_scenario.as_ref()?;
        let id = scenario.job_id.as_deref()?.trim();
        let name = id.rsplit('/').next().unwrap_or_default();
        let idle = name.is_empty()
            || name.eq_ignore_ascii_case("None")
            || scenario
                .scenario_name
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("None"));
        (!idle).then_some(id)
    }

    /// A string field of `providerSpecificDetails`.
    pub fn detail(&self, field: &str) -> Option<String> {
        self.provider_specific_details
            .as_ref()?
            .get(field)?
            .as_str()
            .map(str::to_owned)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentScenario {
    #[serde(default)]
    pub scenario_name: Option<String>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
}

/// A Site Recovery job.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub properties: JobProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProperties {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub state_description: Option<String>,
    #[serde(default)]
    pub scenario_name: Option<String>,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub target_object_id: Option<String>,
    #[serde(default)]
    pub target_object_name: Option<String>,
    #[serde(default)]
    pub allowed_actions: Vec<String>,
    #[serde(default)]
    pub tasks: Vec<AsrTask>,
    #[serde(default)]
    pub errors: Vec<JobErrorDetails>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
}

/// The state of a job (`JobProperties.state`, a string in the spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    NotStarted,
    InProgress,
    Suspended,
    Succeeded,
    Failed,
    Cancelled,
    Other,
}

impl JobState {
    pub fn parse(text: &str) -> JobState {
        match text.to_ascii_lowercase().as_str() {
            "notstarted" => JobState::NotStarted,
            "inprogress" => JobState::InProgress,
            "suspended" => JobState::Suspended,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" | "canceled" => JobState::Cancelled,
            _ => JobState::Other,
        }
    }

    /// Still running (it may move on without anyone acting).
    pub fn running(self) -> bool {
        matches!(self, JobState::NotStarted | JobState::InProgress)
    }
}

impl Job {
    pub fn state(&self) -> JobState {
        JobState::parse(self.properties.state.as_deref().unwrap_or("Other"))
    }

    pub fn allows(&self, action: &str) -> bool {
        self.properties
            .allowed_actions
            .iter()
            .any(|a| a.eq_ignore_ascii_case(action))
    }

    pub fn scenario(&self) -> &str {
        self.properties.scenario_name.as_deref().unwrap_or_default()
    }

    /// The job's manual-action task ("Complete Failover" of a delta
    /// failback), if it has one.
    pub fn manual_action_task(&self) -> Option<&AsrTask> {
        self.properties.tasks.iter().find(|t| {
            t.custom_details
                .as_ref()
                .and_then(|d| d.instance_type.as_deref())
                .is_some_and(|i| i.eq_ignore_ascii_case("ManualActionTaskDetails"))
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AsrTask {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub custom_details: Option<TaskDetails>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetails {
    #[serde(default)]
    pub instance_type: Option<String>,
}

/// `JobErrorDetails`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobErrorDetails {
    #[serde(default)]
    pub service_error_details: Option<ServiceError>,
    #[serde(default)]
    pub provider_error_details: Option<ProviderErrorDetails>,
    #[serde(default)]
    pub error_level: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
}

/// `ServiceError`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub possible_causes: Option<String>,
    #[serde(default)]
    pub recommended_action: Option<String>,
    #[serde(default)]
    pub activity_id: Option<String>,
}

/// `ProviderError` (an error of the on-premises component).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderErrorDetails {
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub error_id: Option<String>,
    #[serde(default)]
    pub possible_causes: Option<String>,
    #[serde(default)]
    pub recommended_action: Option<String>,
}

impl JobErrorDetails {
    /// The service error and the provider error, each rendered with its
    /// causes and recommended action.
    pub fn details(&self) -> Vec<super::error::AsrErrorDetail> {
        let mut out = Vec::new();
        if let Some(s) = &self.service_error_details {
            out.push(super::error::AsrErrorDetail {
                code: s.code.clone().unwrap_or_default(),
                message: s.message.clone().unwrap_or_default(),
                possible_causes: s.possible_causes.clone(),
                recommended_action: s.recommended_action.clone(),
            });
        }
        if let Some(p) = &self.provider_error_details {
            out.push(super::error::AsrErrorDetail {
                code: p.error_code.map(|c| c.to_string()).unwrap_or_default(),
                message: p.error_message.clone().unwrap_or_default(),
                possible_causes: p.possible_causes.clone(),
                recommended_action: p.recommended_action.clone(),
            });
        }
        out
    }
}

/// A replication fabric (a site).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fabric {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub properties: FabricProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FabricProperties {
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub custom_details: Option<TaskDetails>,
}

/// A recovery services provider: the Site Recovery provider registered on
/// a Hyper-V host (or a VMM server).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryServicesProvider {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub properties: RecoveryServicesProviderProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryServicesProviderProperties {
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub fabric_type: Option<String>,
    #[serde(default)]
    pub connection_status: Option<String>,
    #[serde(default)]
    pub last_heart_beat: Option<String>,
}

impl RecoveryServicesProvider {
    pub fn connected(&self) -> bool {
        self.properties
            .connection_status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Connected"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `Start-AzRecoveryServicesAsrPlannedFailoverJob -Direction
    /// RecoveryToPrimary -Optimize ForDownTime -CreateVmIfNotFound Yes
    /// -ServicesProvider $p` sends for a Hyper-V site (asr-api.md 1a, [S13]).
    #[test]
    fn planned_failover_body_matches_the_published_shape() {
        let provider = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationFabrics/f/replicationRecoveryServicesProviders/p";
        let body = PlannedFailoverInput::failback(
            DataSyncOption::ForDownTime,
            RecoveryVmCreationOption::CreateVmIfNotFound,
            Some(provider.to_owned()),
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "properties": {
                    "failoverDirection": "RecoveryToPrimary",
                    "providerSpecificDetails": {
                        "instanceType": "HyperVReplicaAzureFailback",
                        "dataSyncOption": "ForDownTime",
                        "recoveryVmCreationOption": "CreateVmIfNotFound",
                        "providerIdForAlternateRecovery": provider
                    }
                }
            })
        );
        let full = PlannedFailoverInput::failback(
            DataSyncOption::ForSynchronization,
            RecoveryVmCreationOption::NoAction,
            None,
        );
        assert_eq!(
            serde_json::to_value(&full).unwrap(),
            json!({
                "properties": {
                    "failoverDirection": "RecoveryToPrimary",
                    "providerSpecificDetails": {
                        "instanceType": "HyperVReplicaAzureFailback",
                        "dataSyncOption": "ForSynchronization",
                        "recoveryVmCreationOption": "NoAction"
                    }
                }
            })
        );
    }

    /// The spec's reProtect example (asr-api.md section 2, [S9]).
    #[test]
    fn reprotect_body_matches_the_spec_example() {
        let body = ReverseReplicationInput::hyperv_to_azure(Default::default());
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "properties": {
                    "failoverDirection": "PrimaryToRecovery",
                    "providerSpecificDetails": { "instanceType": "HyperVReplicaAzure" }
                }
            })
        );
        let filled = ReverseReplicationInput::hyperv_to_azure(HyperVReplicaAzureReprotectInput {
            vm_name: Some("db-01".into()),
            v_hd_id: Some("disk-0".into()),
            ..Default::default()
        });
        let value = serde_json::to_value(&filled).unwrap();
        assert_eq!(
            value["properties"]["providerSpecificDetails"]["vHDId"],
            "disk-0"
        );
        assert_eq!(
            value["properties"]["providerSpecificDetails"]["vmName"],
            "db-01"
        );
    }

    /// The spec's resume example body (asr-api.md section 2, [S8]).
    #[test]
    fn resume_body_matches_the_spec_example() {
        let body = ResumeJobParams {
            properties: ResumeJobParamsProperties {
                comments: Some("Resuming job".into()),
            },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({ "properties": { "comments": "Resuming job" } })
        );
    }

    /// The idle sentinel of the spec examples is no job.
    #[test]
    fn the_idle_scenario_is_no_job() {
        let item: ProtectedItem = serde_json::from_value(json!({
            "id": "x", "name": "x",
            "properties": {
                "currentScenario": {
                    "scenarioName": "None",
                    "jobId": "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/None",
                    "startTime": "1753-01-01T01:01:01Z"
                }
            }
        }))
        .unwrap();
        assert_eq!(item.properties.current_job_id(), None);
    }
}

//! From Site Recovery's view of a protected item to the provider contract's
//! [`Lifecycle`] (asr-api.md section 7, "Derived state machine"). Pure.
//!
//! Site Recovery's `protectionState` vocabulary is only partly published,
//! so the derivation keys on what is documented: the item's current job
//! (`currentScenario.jobId`: its scenario, state and manual-action task),
//! `activeLocation` and `allowedOperations`, and reads `protectionState`
//! only to recognise `Protected`.

use crate::plan::SyncMode;
use crate::provider::Lifecycle;

use super::models::{Job, JobState, ProtectedItemProperties};

/// Scenario names (`ReplicationProtectedItemOperation` values) of the jobs
/// the provider starts.
pub const SCENARIO_FAILOVER: &str = "PlannedFailover";
pub const SCENARIO_COMMIT: &str = "Commit";
pub const SCENARIO_REPROTECT: &str = "ReverseReplicate";

/// What the item says about one VM's failback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Derived {
    pub state: Lifecycle,
    pub failover_committed: bool,
    pub sync_mode: Option<SyncMode>,
}

/// Whether `job` is of `scenario` (its scenario name, or its friendly name
/// as some jobs carry only that).
pub fn job_is(job: &Job, scenario: &str) -> bool {
    let s = job.scenario();
    s.eq_ignore_ascii_case(scenario)
        || (scenario == SCENARIO_REPROTECT && s.eq_ignore_ascii_case("ReProtect"))
        || (scenario == SCENARIO_COMMIT && s.eq_ignore_ascii_case("FailoverCommit"))
}

/// The lifecycle state of an item, given its current job (if any).
///
/// Errors: an item whose `activeLocation` is neither `Primary` nor
/// `Recovery` (the message names what was seen).
pub fn derive(props: &ProtectedItemProperties, job: Option<&Job>) -> Result<Derived, String> {
    if let Some(job) = job.filter(|j| j.state() != JobState::Succeeded) {
        if job_is(job, SCENARIO_FAILOVER) {
            let manual = job.manual_action_task();
            let sync_mode = Some(if manual.is_some() {
                SyncMode::Delta
            } else {
                SyncMode::Full
            });
            let past_manual = manual
                .and_then(|t| t.state.as_deref())
                .is_some_and(|s| JobState::parse(s) == JobState::Succeeded);
            let state = match job.state() {
                JobState::Suspended => Lifecycle::AwaitingCompletion,
                _ if past_manual => Lifecycle::FinalSync,
                _ => Lifecycle::Syncing,
            };
            return Ok(Derived {
                state,
                failover_committed: true,
                sync_mode,
            });
        }
        if job.state().running() && job_is(job, SCENARIO_COMMIT) {
            return Ok(Derived {
                state: Lifecycle::CommitPending,
                failover_committed: true,
                sync_mode: None,
            });
        }
        if job.state().running() && job_is(job, SCENARIO_REPROTECT) {
            return Ok(Derived {
                state: Lifecycle::Committed,
                failover_committed: true,
                sync_mode: None,
            });
        }
    }
    let location = props.active_location.as_deref().unwrap_or_default();
    let done = |state| {
        Ok(Derived {
            state,
            failover_committed: true,
            sync_mode: None,
        })
    };
    if location.eq_ignore_ascii_case("Recovery") {
        // After a failover to Azure: Commit is offered until it is committed,
        // then Failback (asr-api.md 3a).
        return Ok(Derived {
            state: Lifecycle::RunningInRecovery,
            failover_committed: !props.allows("Commit"),
            sync_mode: None,
        });
    }
    if location.eq_ignore_ascii_case("Primary") {
        let protected = props
            .protection_state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Protected"));
        return if props.allows("Commit") {
            done(Lifecycle::CommitPending)
        } else if props.allows("ReverseReplicate") || props.allows("ReProtect") {
            done(Lifecycle::Committed)
        } else if protected {
            done(Lifecycle::Protected)
        } else {
            done(Lifecycle::Committed)
        };
    }
    Err(format!(
        "activeLocation is '{location}' (protectionState '{}', allowedOperations [{}]); expected \
         Primary or Recovery",
        props.protection_state.as_deref().unwrap_or_default(),
        props.allowed_operations.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::azure::models::ProtectedItem;
    use serde_json::json;

    fn props(value: serde_json::Value) -> ProtectedItemProperties {
        serde_json::from_value::<ProtectedItem>(
            json!({ "id": "i", "name": "i", "properties": value }),
        )
        .unwrap()
        .properties
    }

    fn job(state: &str, scenario: &str, manual: Option<&str>) -> Job {
        let mut tasks = vec![json!({"name": "sync", "state": "Succeeded",
            "customDetails": {"instanceType": "JobTaskDetails"}})];
        if let Some(m) = manual {
            tasks.push(json!({"name": "complete", "state": m,
                "customDetails": {"instanceType": "ManualActionTaskDetails"}}));
        }
        serde_json::from_value(json!({ "id": "j", "name": "j", "properties": {
            "state": state, "scenarioName": scenario, "tasks": tasks }}))
        .unwrap()
    }

    /// The three states of the spec examples (asr-api.md 3a, [S9]).
    #[test]
    fn the_spec_examples_map_to_lifecycle_states() {
        let after_failover = props(json!({
            "protectionState": "PlannedFailoverCommitRequired", "activeLocation": "Recovery",
            "allowedOperations": ["CompleteMigration", "Commit", "DisableProtection", "ChangePit"]}));
        let d = derive(&after_failover, None).unwrap();
        assert_eq!(d.state, Lifecycle::RunningInRecovery);
        assert!(!d.failover_committed);

        let after_commit = props(json!({
            "protectionState": "PlannedFailoverStatesBegin", "activeLocation": "Recovery",
            "allowedOperations": ["CompleteMigration", "DisableProtection", "Failback"]}));
        let d = derive(&after_commit, None).unwrap();
        assert_eq!(d.state, Lifecycle::RunningInRecovery);
        assert!(d.failover_committed);

        let after_reprotect = props(json!({
            "protectionState": "Protected", "activeLocation": "Primary",
            "allowedOperations": ["PlannedFailover", "UnplannedFailover", "DisableProtection", "TestFailover"]}));
        assert_eq!(
            derive(&after_reprotect, None).unwrap().state,
            Lifecycle::Protected
        );
    }

    #[test]
    fn a_failback_job_gives_the_phase() {
        let p = props(json!({"activeLocation": "Recovery", "allowedOperations": []}));
        let d = derive(
            &p,
            Some(&job("InProgress", "PlannedFailover", Some("NotStarted"))),
        )
        .unwrap();
        assert_eq!(
            (d.state, d.sync_mode),
            (Lifecycle::Syncing, Some(SyncMode::Delta))
        );
        let d = derive(
            &p,
            Some(&job("Suspended", "PlannedFailover", Some("Suspended"))),
        )
        .unwrap();
        assert_eq!(d.state, Lifecycle::AwaitingCompletion);
        let d = derive(
            &p,
            Some(&job("InProgress", "PlannedFailover", Some("Succeeded"))),
        )
        .unwrap();
        assert_eq!(d.state, Lifecycle::FinalSync);
        let d = derive(
            &p,
            Some(&job("Failed", "PlannedFailover", Some("Succeeded"))),
        )
        .unwrap();
        assert_eq!(
            d.state,
            Lifecycle::FinalSync,
            "a failed final phase is completed again"
        );
        let d = derive(&p, Some(&job("InProgress", "PlannedFailover", None))).unwrap();
        assert_eq!(
            (d.state, d.sync_mode),
            (Lifecycle::Syncing, Some(SyncMode::Full))
        );
    }

    #[test]
    fn after_the_failback_the_operations_give_the_state() {
        let pending = props(json!({"activeLocation": "Primary", "allowedOperations": ["Commit"]}));
        assert_eq!(
            derive(&pending, None).unwrap().state,
            Lifecycle::CommitPending
        );
        let committing = job("InProgress", "Commit", None);
        assert_eq!(
            derive(&pending, Some(&committing)).unwrap().state,
            Lifecycle::CommitPending
        );
        let committed = props(
            json!({"activeLocation": "Primary", "protectionState": "UnprotectedStatesBegin",
            "allowedOperations": ["ReverseReplicate", "DisableProtection"]}),
        );
        assert_eq!(
            derive(&committed, None).unwrap().state,
            Lifecycle::Committed
        );
        let odd = props(json!({"activeLocation": "Elsewhere"}));
        assert!(derive(&odd, None).unwrap_err().contains("Elsewhere"));
    }
}

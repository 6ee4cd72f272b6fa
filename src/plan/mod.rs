//! The plan model: a `FailbackPlan` as declared in YAML, version 1.
//!
//! These types are the single source of the plan's shape: the JSON Schema in
//! `schemas/failback-plan.v1.json` is generated from them (doc comments become
//! descriptions), the validator checks text against that schema before it
//! deserializes into them, and the engine reads them. This module does no I/O.

mod names;
mod schema;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use names::{
    EnvVarName, GroupName, HostName, PlanName, SecretPath, SiteName, VSwitchName, VmName,
};
pub use schema::{SCHEMA_ID, plan_schema, plan_schema_json};

/// The `apiVersion` this build reads.
pub const API_VERSION: &str = "failback/v1";
/// The `kind` of a plan document.
pub const KIND: &str = "FailbackPlan";

/// A failback recovery plan: which VMs return from the recovery site to which
/// on-premises Hyper-V hosts, in which order, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "FailbackPlan")]
pub struct FailbackPlan {
    /// The plan format version. Always `failback/v1` for this format.
    pub api_version: ApiVersion,
    /// The document kind. Always `FailbackPlan`.
    pub kind: Kind,
    /// Name, description and labels of the plan.
    pub metadata: Metadata,
    /// What the failback must achieve.
    pub spec: Spec,
}

/// The plan format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// Version 1 of the plan format.
    #[serde(rename = "failback/v1")]
    V1,
}

/// The document kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Kind {
    /// A failback recovery plan.
    FailbackPlan,
}

/// Identity of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The plan's name: lowercase letters, digits and `-`, starting and ending
    /// with a letter or digit, at most 63 characters. Locks, approvals and the
    /// lab world are keyed by it.
    pub name: PlanName,
    /// Free text for people reading the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form string labels, for example the owning team.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The declared failback: sites, defaults and the ordered groups of VMs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// The on-premises Hyper-V site the VMs return to.
    pub primary: PrimarySite,
    /// The recovery site (Azure) where the VMs run now.
    pub recovery: RecoverySite,
    /// Settings every VM inherits unless it overrides them.
    #[serde(default)]
    pub defaults: Defaults,
    /// How many VMs may be in flight at once across the whole plan (1 to 1024).
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: u16,
    /// Legacy data-encryption certificate. Azure retired this setting in April
    /// 2022: it is accepted, and the validator warns that it has no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The groups of VMs, run one after another in this order. The VMs of one
    /// group run in parallel.
    #[schemars(length(min = 1))]
    pub groups: Vec<Group>,
}

fn default_parallelism() -> u16 {
    4
}

/// The on-premises site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrimarySite {
    /// Name of the primary site (the Hyper-V site or VMM cloud).
    pub site: SiteName,
    /// How the primary site is managed.
    #[serde(default)]
    pub management: Management,
    /// The Hyper-V hosts VMs may fail back to. Each name is unique in the plan.
    #[schemars(length(min = 1))]
    pub hosts: Vec<Host>,
}

/// How the primary site is managed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Management {
    /// Standalone Hyper-V hosts registered in a Hyper-V site.
    #[default]
    HypervSite,
    /// Hosts managed by System Center Virtual Machine Manager.
    Vmm,
}

/// One Hyper-V host of the primary site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Host {
    /// The host's name, as registered with Site Recovery.
    pub name: HostName,
    /// The virtual switches on this host. A VM's network adapter can only be
    /// connected to a vSwitch of the same name it used before.
    #[schemars(length(min = 1))]
    pub vswitches: Vec<VSwitchName>,
}

/// The recovery site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoverySite {
    /// Name of the recovery site, for people and reports.
    pub site: SiteName,
    /// Resource ID of the Recovery Services vault. Needed only by the Azure
    /// provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.RecoveryServices/vaults/[^/]+$"
    ))]
    pub vault: Option<String>,
}

/// Settings every VM inherits unless it sets its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// How data is synchronised (default `delta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncMode>,
    /// Whether a `delta` failback completes on its own after phase 1 (default `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    /// Whether and when the failback is committed (default `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitPolicy>,
    /// Protect the VM again towards the recovery site after commit (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_replicate: Option<bool>,
    /// Create the VM on its host if it does not exist there (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_if_missing: Option<bool>,
}

/// How a VM's disks are synchronised back to the primary site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// Synchronise before failover, delta changes only (Site Recovery
    /// `ForDownTime`): only differing blocks are copied while the recovery VM
    /// keeps running; downtime covers only the final changes.
    #[default]
    Delta,
    /// Synchronise during failover only, full download (Site Recovery
    /// `ForSynchronization`): the recovery VM is shut down and every block is
    /// copied. Needs no existing primary disk.
    Full,
}

/// When a `delta` failback goes on from phase 1 to the final sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Completion {
    /// Go straight on after phase 1.
    #[default]
    Auto,
    /// Wait after phase 1 until the completion gate is approved (Site
    /// Recovery's "Complete Failover").
    Manual,
}

/// When a failback is committed. Commit deletes the recovery-side VM and disks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CommitPolicy {
    /// Commit once the VM runs on the primary host and its `verify` passed.
    Auto,
    /// Wait at "commit pending" until the commit gate is approved.
    #[default]
    Manual,
    /// Never commit: leave the VM at "commit pending".
    Never,
}

/// Legacy encryption settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    /// Where the data-encryption certificate is found: a file path or an
    /// environment variable name, never the certificate itself.
    pub certificate: SecretRef,
}

/// A reference to a secret. The plan never holds the secret itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SecretRef {
    /// Path of a file holding the secret, relative to the plan file.
    File(SecretPath),
    /// Name of an environment variable holding the secret.
    Env(EnvVarName),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file:{p}"),
            SecretRef::Env(n) => write!(f, "env:{n}"),
        }
    }
}

/// A group of VMs that fail back together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Group {
    /// The group's name, unique in the plan.
    pub name: GroupName,
    /// The VMs of this group; they run in parallel.
    #[schemars(length(min = 1))]
    pub vms: Vec<Vm>,
}

/// One VM to fail back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vm {
    /// The VM's name, unique across the whole plan.
    pub name: VmName,
    /// The host the VM must run on after failback: one of `spec.primary.hosts`.
    pub host: HostName,
    /// The VM's network adapters and the vSwitch each must be connected to on
    /// the target host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Overrides `defaults.sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncMode>,
    /// Overrides `defaults.completion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    /// Overrides `defaults.commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitPolicy>,
    /// Overrides `defaults.reverseReplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_replicate: Option<bool>,
    /// Overrides `defaults.createIfMissing`. With `true` and a host other than
    /// the original one, this is an alternate-location failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_if_missing: Option<bool>,
    /// A health check run before an automatic commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
}

/// A network adapter of a VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// A label for the adapter, for people and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub adapter: Option<String>,
    /// The vSwitch the adapter connects to; it must exist on the VM's host.
    pub vswitch: VSwitchName,
}

/// A health check: a local command, run with `FAILBACK_VM` and `FAILBACK_HOST`
/// set, that must exit 0 within the timeout before an automatic commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verify {
    /// The program and its arguments; not run through a shell.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// How long the check may take, as a duration such as `30s`, `5m` or `1h 30m`
    /// (default `5m`).
    #[serde(default = "default_verify_timeout", with = "humantime_serde_compat")]
    #[schemars(
        with = "String",
        regex(pattern = r"^\s*[0-9]+\s*[a-zA-Zµ]+(\s*[0-9]+\s*[a-zA-Zµ]+)*\s*$")
    )]
    pub timeout: Duration,
}

fn default_verify_timeout() -> Duration {
    Duration::from_secs(300)
}

/// `Duration` as a humantime string, in both directions.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The settings of one VM once its overrides and the plan defaults are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSettings {
    pub sync: SyncMode,
    pub completion: Completion,
    pub commit: CommitPolicy,
    pub reverse_replicate: bool,
    pub create_if_missing: bool,
}

impl FailbackPlan {
    /// Every VM with its group, in plan order.
    pub fn vms(&self) -> impl Iterator<Item = (&Group, &Vm)> {
        self.spec
            .groups
            .iter()
            .flat_map(|g| g.vms.iter().map(move |vm| (g, vm)))
    }

    /// A declared host by name.
    pub fn host(&self, name: &HostName) -> Option<&Host> {
        self.spec.primary.hosts.iter().find(|h| &h.name == name)
    }

    /// The settings a VM runs with: its own, else the plan's defaults, else the
    /// format's defaults.
    pub fn effective(&self, vm: &Vm) -> EffectiveSettings {
        let d = &self.spec.defaults;
        EffectiveSettings {
            sync: vm.sync.or(d.sync).unwrap_or_default(),
            completion: vm.completion.or(d.completion).unwrap_or_default(),
            commit: vm.commit.or(d.commit).unwrap_or_default(),
            reverse_replicate: vm.reverse_replicate.or(d.reverse_replicate).unwrap_or(true),
            create_if_missing: vm
                .create_if_missing
                .or(d.create_if_missing)
                .unwrap_or(false),
        }
    }
}

//! The provider seam: where the actual state of a failback lives and how it
//! is changed. The engine knows only this trait; `lab` is the embedded
//! provider (both sites on this machine, real disk images), and a provider
//! for Azure Site Recovery implements the same contract over its REST API.
//!
//! # Guarantees a provider gives
//!
//! - **Observations are authoritative.** [`Provider::observe`] reads the real
//!   state every time; it never answers from a cache of what this process did.
//! - **Every action is idempotent.** Calling an action whose effect is already
//!   in place succeeds and changes nothing; calling it on a half-done effect
//!   (after a crash, a lost reply or a timeout) completes it. An action called
//!   in a state where it does not apply returns [`ProviderError::Conflict`]
//!   without changing anything.
//! - **Intent before effect.** A provider records that an action started
//!   (for example the VM's state becomes `syncing`) durably before it moves
//!   data or powers anything on, so an interrupted action is visible to the
//!   next observation and is completed by calling the same action again.
//! - **Safety is enforced here, where data moves.** A provider never starts a
//!   primary VM unless each of its disks is verified equal to the recovery
//!   disk as it was when the recovery VM was shut down; never sends the final
//!   changes before the recovery VM is confirmed off; never deletes the
//!   recovery copy except in [`Provider::commit`], and only after the primary
//!   VM runs.
//!
//! # Assumptions a provider makes
//!
//! - The caller holds the plan's run lock: no two runners act on one plan.
//! - Other processes (a guest writing into a running recovery VM) may change
//!   the recovery side at any time until it is shut down.
//!
//! # Errors
//!
//! [`ProviderError::Transient`] may be retried with backoff; the engine
//! re-observes before retrying, so a lost reply is never acted on twice.
//! [`ProviderError::Conflict`] means the world is not in a state where the
//! action applies (re-observe and decide again). [`ProviderError::Failed`] is
//! terminal for that VM in this run: its message names the cause and the fix.

pub mod azure;
pub mod lab;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::plan::{FailbackPlan, SyncMode};

/// Where a VM is in its failback (failback.md, "One VM's lifecycle").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Failed over and committed: running in the recovery site.
    RunningInRecovery,
    /// A failback started: data is being synchronised (delta phase 1 with the
    /// recovery VM running, or a full copy with it off).
    Syncing,
    /// Delta phase 1 finished; waiting for "Complete Failover".
    AwaitingCompletion,
    /// The recovery VM is off and the final changes are being sent.
    FinalSync,
    /// The VM runs on the primary host; the recovery VM still exists, off.
    CommitPending,
    /// Committed: the recovery-side VM and disks are deleted.
    Committed,
    /// Primary active and protected again towards the recovery site.
    Protected,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::RunningInRecovery => "running-in-recovery",
            Lifecycle::Syncing => "syncing",
            Lifecycle::AwaitingCompletion => "awaiting-completion",
            Lifecycle::FinalSync => "final-sync",
            Lifecycle::CommitPending => "commit-pending",
            Lifecycle::Committed => "committed",
            Lifecycle::Protected => "protected",
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One host of the primary site as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedHost {
    pub name: String,
    pub connected: bool,
    /// `None` when the provider cannot read vSwitches (the check is then
    /// reported as not made, never as passed).
    pub vswitches: Option<Vec<String>>,
}

/// One VM as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedVm {
    pub name: String,
    pub state: Lifecycle,
    /// The earlier failover to the recovery site was committed.
    pub failover_committed: bool,
    /// The VM has at least one recovery point (replicated data).
    pub has_recovery_point: bool,
    pub recovery_exists: bool,
    pub recovery_running: bool,
    pub primary_exists: bool,
    /// The host the primary-side VM is on, when it exists.
    pub primary_host: Option<String>,
    pub primary_running: bool,
    /// The sync mode of the failback in progress, if one is.
    pub sync_mode: Option<SyncMode>,
    pub days_in_recovery: u32,
    /// From recovery VM off to primary VM running, for the last failback.
    pub downtime_ms: Option<u64>,
}

/// The actual state relevant to one plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct World {
    pub primary_connected: bool,
    pub hosts: Vec<ObservedHost>,
    /// The plan's VMs that the recovery site knows, by name.
    pub vms: Vec<ObservedVm>,
}

impl World {
    /// The VM named `name`. Providers list VMs sorted by name
    /// ([`World::sort`]), which makes this a binary search; an unsorted list
    /// is still searched correctly, in linear time.
    pub fn vm(&self, name: &str) -> Option<&ObservedVm> {
        match self.vms.binary_search_by(|v| v.name.as_str().cmp(name)) {
            Ok(i) => self.vms.get(i),
            Err(_) => self.vms.iter().find(|v| v.name == name),
        }
    }

    /// The host named `name`, found as [`World::vm`] finds VMs.
    pub fn host(&self, name: &str) -> Option<&ObservedHost> {
        match self.hosts.binary_search_by(|h| h.name.as_str().cmp(name)) {
            Ok(i) => self.hosts.get(i),
            Err(_) => self.hosts.iter().find(|h| h.name == name),
        }
    }

    /// Sorts VMs and hosts by name, so that lookups by name are binary
    /// searches (a plan of 10,000 VMs looks each up once per decision).
    pub fn sort(mut self) -> Self {
        self.vms.sort_by(|a, b| a.name.cmp(&b.name));
        self.hosts.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }
}

/// How a failback is started for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailbackRequest {
    pub vm: String,
    pub sync: SyncMode,
    pub create_if_missing: bool,
    /// The host the VM must run on (its plan host).
    pub target_host: String,
}

/// Progress of a long action, reported while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub vm: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Receives progress reports; cheap to call often.
pub type ProgressFn = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ProviderError {
    /// May succeed if tried again (after re-observing).
    #[error("{0}")]
    Transient(String),
    /// The action does not apply in the VM's current state.
    #[error("{0}")]
    Conflict(String),
    /// Terminal for this VM in this run.
    #[error("{0}")]
    Failed(String),
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// A boxed future, so that the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The actions of failback, shaped like Azure Site Recovery's. See the
/// module docs for the contract every implementation honours.
pub trait Provider: Send + Sync {
    /// The actual state of the primary site and of the plan's VMs.
    fn observe<'a>(&'a self, plan: &'a FailbackPlan) -> BoxFuture<'a, ProviderResult<World>>;

    /// What [`Provider::observe`] returns, restricted to the VM named `vm`
    /// (absent if the recovery site does not know it): the site, its hosts
    /// and that one VM. The engine asks it after each step of a VM, which
    /// needs nothing else; a provider that can read one VM more cheaply
    /// than all of them overrides it. The default observes everything.
    fn observe_vm<'a>(
        &'a self,
        plan: &'a FailbackPlan,
        vm: &'a str,
    ) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async move {
            let mut world = self.observe(plan).await?;
            world.vms.retain(|v| v.name == vm);
            Ok(world)
        })
    }

    /// Starts (or continues) a planned failover towards the primary site.
    /// `delta`: phase 1 while the recovery VM runs, ending at
    /// `awaiting-completion`. `full`: shuts the recovery VM down, copies
    /// everything, verifies, starts the primary VM: ends at `commit-pending`.
    fn start_failback<'a>(
        &'a self,
        req: &'a FailbackRequest,
        progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>>;

    /// "Complete Failover" of a delta failback: confirm the recovery VM off,
    /// send the final changes, verify, start the primary VM. Ends at
    /// `commit-pending`. Fails, changing nothing more, when the recovery VM
    /// cannot be confirmed off.
    fn complete<'a>(
        &'a self,
        vm: &'a str,
        progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>>;

    /// Commits: deletes the recovery-side VM and disks. Only from
    /// `commit-pending` with the primary VM running. Ends at `committed`.
    fn commit<'a>(&'a self, vm: &'a str) -> BoxFuture<'a, ProviderResult<()>>;

    /// Protects the VM again, primary towards recovery. Ends at `protected`.
    fn reverse_replicate<'a>(
        &'a self,
        vm: &'a str,
        progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>>;
}

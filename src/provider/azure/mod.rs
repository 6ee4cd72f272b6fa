//! The Azure Site Recovery provider: the [`Provider`] contract over the
//! Site Recovery REST API of one Recovery Services vault (docs/azure.md).
//!
//! | contract | Site Recovery |
//! |---|---|
//! | `observe` | list `replicationProtectedItems` (by VM friendly name), `GET replicationJobs/{job}` of each item's `currentScenario.jobId`, list `replicationFabrics` and the primary fabric's `replicationRecoveryServicesProviders` |
//! | `start_failback` | `plannedFailover`, `RecoveryToPrimary`, `HyperVReplicaAzureFailback` input |
//! | `complete` | `replicationJobs/{job}/resume` of the suspended failback job |
//! | `commit` | `failoverCommit` |
//! | `reverse_replicate` | `reProtect`, `PrimaryToRecovery`, `HyperVReplicaAzure` input |
//!
//! # Guarantees
//!
//! - Observations are read from the service on every call; nothing is cached
//!   but the bearer token.
//! - Every action first re-reads the item. A job the item already runs
//!   (`currentScenario.jobId`) is re-attached to, never started twice: after
//!   a crash or a lost reply, calling the same action again waits for that
//!   job (or restarts it, when it failed half-way and allows `Restart`).
//! - An action is sent once per call (see [`client`]); an action that does
//!   not apply in the item's state returns `Conflict` and sends nothing.
//! - The data path's safety (verified disks before a boot, final changes
//!   only after the Azure VM is off, the Azure copy deleted only by commit)
//!   is Site Recovery's, not this process's: the provider only orders the
//!   operations as the contract does.
//!
//! # What cannot be read through Azure
//!
//! vSwitch names of the hosts (from `--hyperv-inventory FILE`, else `None`:
//! not checked, with a warning); the on-premises VM's power state before the
//! failback (derived from the lifecycle); the downtime (not reported).

pub mod client;
pub mod config;
pub mod emulator;
pub mod error;
pub mod inventory;
pub mod models;
pub mod observe;
pub mod token;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub use client::{AsrClient, PollPolicy};
pub use config::{AzureConfig, DEFAULT_API_VERSION, DEFAULT_ARM_ENDPOINT, VaultId};
pub use error::{AzureError, ErrorClass};
pub use inventory::HypervInventory;
pub use token::{AccessToken, TokenSource};

use client::Accepted;
use models::{
    DataSyncOption, Fabric, HyperVReplicaAzureReprotectInput, Job, JobState, PlannedFailoverInput,
    ProtectedItem, RecoveryServicesProvider, RecoveryVmCreationOption, ResumeJobParams,
    ResumeJobParamsProperties, ReverseReplicationInput,
};
use observe::{SCENARIO_COMMIT, SCENARIO_FAILOVER, SCENARIO_REPROTECT, derive, job_is};

use super::{
    BoxFuture, FailbackRequest, Lifecycle, ObservedHost, ObservedVm, ProgressFn, Provider,
    ProviderError, ProviderResult, World,
};
use crate::plan::{FailbackPlan, Management, SyncMode};

/// The Azure Site Recovery provider of one vault.
#[derive(Debug)]
pub struct AzureProvider {
    client: AsrClient,
    inventory: Option<HypervInventory>,
    /// The plan's primary site: the fabric's friendly name.
    site: String,
    management: Management,
    /// Warnings already given (each once per process).
    warned: Mutex<BTreeSet<String>>,
    /// Protected item IDs by VM name, from the last listing of the vault:
    /// a step then reads its VM's item alone instead of listing them all.
    item_ids: Mutex<HashMap<String, String>>,
}

/// One VM's protected item, its current job and what they say.
struct Item {
    item: ProtectedItem,
    job: Option<Job>,
}

/// The primary site as Site Recovery sees it.
struct Site {
    providers: Vec<RecoveryServicesProvider>,
}

impl AzureProvider {
    /// A provider over `client` for `plan`'s primary site; vSwitches from
    /// `inventory` when given.
    pub fn new(
        client: AsrClient,
        inventory: Option<HypervInventory>,
        plan: &FailbackPlan,
    ) -> AzureProvider {
        AzureProvider {
            client,
            inventory,
            site: plan.spec.primary.site.to_string(),
            management: plan.spec.primary.management,
            warned: Mutex::new(BTreeSet::new()),
            item_ids: Mutex::new(HashMap::new()),
        }
    }

    /// From the configuration and a credential (see [`token::from_environment`]).
    ///
    /// Errors: the HTTPS client cannot be set up, or the inventory file
    /// cannot be read.
    pub fn from_config(
        config: &AzureConfig,
        plan: &FailbackPlan,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<AzureProvider, AzureError> {
        let http = client::http_client()?;
        let tokens = match tokens {
            Some(t) => t,
            None => token::from_environment(http.clone(), &config.arm_endpoint)?,
        };
        let inventory = config
            .hyperv_inventory
            .as_deref()
            .map(HypervInventory::load)
            .transpose()?;
        Ok(AzureProvider::new(
            AsrClient::new(config, http, tokens),
            inventory,
            plan,
        ))
    }

    pub fn client(&self) -> &AsrClient {
        &self.client
    }

    fn warn_once(&self, key: &str, message: &str) {
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert(key.to_owned()))
            .unwrap_or(true);
        if first {
            tracing::warn!("{message}");
        }
    }

    fn vault_path(&self) -> &str {
        self.client.vault().path()
    }

    /// Every protected item of the vault.
    async fn items(&self) -> Result<Vec<ProtectedItem>, AzureError> {
        self.client
            .list(
                &format!("{}/replicationProtectedItems", self.vault_path()),
                "listing the protected items",
            )
            .await
    }

    /// The protected item whose friendly name is `vm` (exact, else without
    /// regard to case), if exactly one.
    fn pick<'a>(
        items: &'a [ProtectedItem],
        vm: &str,
    ) -> Result<Option<&'a ProtectedItem>, AzureError> {
        let name = |i: &&ProtectedItem| i.properties.friendly_name.clone().unwrap_or_default();
        let exact: Vec<&ProtectedItem> = items.iter().filter(|i| name(i) == vm).collect();
        let found: Vec<&ProtectedItem> = if exact.is_empty() {
            items
                .iter()
                .filter(|i| name(i).eq_ignore_ascii_case(vm))
                .collect()
        } else {
            exact
        };
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(AzureError::failed(format!(
                "{} protected items of the vault are named '{vm}' ({}); rename the VMs so that \
                 each name is unique",
                many.len(),
                many.iter()
                    .map(|i| i.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The item of `vm` with its current job, read now.
    async fn item(&self, vm: &str) -> Result<Item, AzureError> {
        self.find_item(vm).await?.ok_or_else(|| {
            AzureError::conflict(format!(
                "VM '{vm}' is not a protected item of vault '{}'",
                self.client.vault().name()
            ))
        })
    }

    /// The item of `vm` with its current job, read now, if the vault has
    /// one: by its ID when an earlier listing gave it (one GET, whatever the
    /// vault's size), else by listing the vault. An item that is gone,
    /// renamed or unreadable by its ID is looked for in the listing.
    async fn find_item(&self, vm: &str) -> Result<Option<Item>, AzureError> {
        let known = self
            .item_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(vm).cloned());
        if let Some(id) = known {
            let what = format!("reading the protected item of VM '{vm}'");
            match self.client.get::<ProtectedItem>(&id, &what).await {
                Ok(item) if Self::pick(std::slice::from_ref(&item), vm)?.is_some() => {
                    return self.with_job(item, vm).await.map(Some);
                }
                Err(e) if e.class == ErrorClass::Transient => return Err(e),
                _ => self.remember(vm, None),
            }
        }
        let items = self.items().await?;
        match Self::pick(&items, vm)? {
            Some(item) => {
                self.remember(vm, Some(&item.id));
                self.with_job(item.clone(), vm).await.map(Some)
            }
            None => Ok(None),
        }
    }

    /// Records (or forgets) the ID of `vm`'s protected item.
    fn remember(&self, vm: &str, id: Option<&str>) {
        if let Ok(mut ids) = self.item_ids.lock() {
            match id {
                Some(id) => ids.insert(vm.to_owned(), id.to_owned()),
                None => ids.remove(vm),
            };
        }
    }

    async fn with_job(&self, item: ProtectedItem, vm: &str) -> Result<Item, AzureError> {
        if !self.client.vault().contains(&item.id) {
            return Err(AzureError::failed(format!(
                "the protected item of VM '{vm}' has the ID '{}', outside vault '{}'",
                item.id,
                self.client.vault()
            )));
        }
        let job = match item.properties.current_job_id() {
            Some(id) => Some(
                self.client
                    .job(id, &format!("reading the current job of VM '{vm}'"))
                    .await?,
            ),
            None => None,
        };
        Ok(Item { item, job })
    }

    fn derived(item: &Item, vm: &str) -> Result<observe::Derived, AzureError> {
        derive(&item.item.properties, item.job.as_ref()).map_err(|why| {
            AzureError::failed(format!(
                "VM '{vm}': cannot tell the failback state of its protected item: {why}"
            ))
        })
    }

    /// The primary fabric (the plan's site) and its providers.
    async fn site(&self) -> Result<Site, AzureError> {
        let fabrics: Vec<Fabric> = self
            .client
            .list(
                &format!("{}/replicationFabrics", self.vault_path()),
                "listing the fabrics",
            )
            .await?;
        let site = self.site.as_str();
        let fabric_name = |f: &Fabric| f.properties.friendly_name.clone().unwrap_or_default();
        let fabric = fabrics
            .iter()
            .find(|f| {
                fabric_name(f).eq_ignore_ascii_case(site) || f.name.eq_ignore_ascii_case(site)
            })
            .cloned()
            .ok_or_else(|| {
                AzureError::failed(format!(
                    "vault '{}' has no fabric (site) named '{site}' (it has: {}); set \
                     `spec.primary.site` to the Hyper-V site's name in Site Recovery",
                    self.client.vault().name(),
                    fabrics
                        .iter()
                        .map(fabric_name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let providers = self
            .client
            .list(
                &format!(
                    "{}/replicationRecoveryServicesProviders",
                    fabric_path(&fabric, self.vault_path())
                ),
                "listing the recovery services providers",
            )
            .await?;
        Ok(Site { providers })
    }

    /// The provider (host) registered as `host`: by friendly name, without
    /// regard to case, a fully qualified name matching its first label.
    fn provider_for<'a>(site: &'a Site, host: &str) -> Option<&'a RecoveryServicesProvider> {
        let key = inventory::host_key(host);
        site.providers.iter().find(|p| {
            let name = p.properties.friendly_name.as_deref().unwrap_or(&p.name);
            name.eq_ignore_ascii_case(host) || inventory::host_key(name) == key
        })
    }

    /// A provider's name as the plan spells it (when the plan has it).
    fn host_name(plan: &FailbackPlan, provider: &RecoveryServicesProvider) -> String {
        let name = provider
            .properties
            .friendly_name
            .clone()
            .unwrap_or_else(|| provider.name.clone());
        plan.spec
            .primary
            .hosts
            .iter()
            .map(|h| h.name.to_string())
            .find(|h| {
                h.eq_ignore_ascii_case(&name)
                    || inventory::host_key(h) == inventory::host_key(&name)
            })
            .unwrap_or(name)
    }

    /// The hosts of the primary site and whether any is connected.
    fn observed_hosts(&self, plan: &FailbackPlan, site: &Site) -> (Vec<ObservedHost>, bool) {
        if self.inventory.is_none() {
            self.warn_once(
                "no-inventory",
                "vSwitches cannot be read through Azure Site Recovery: the vSwitch precondition is \
                 NOT checked; export them with `Get-VMSwitch | Select Name, ComputerName | \
                 ConvertTo-Json` and pass --hyperv-inventory FILE",
            );
        }
        let hosts = site
            .providers
            .iter()
            .map(|p| {
                let name = Self::host_name(plan, p);
                let vswitches = self.inventory.as_ref().and_then(|inv| {
                    let found = inv.vswitches(&name);
                    if found.is_none() {
                        self.warn_once(
                            &format!("inventory:{name}"),
                            &format!(
                                "the Hyper-V inventory lists no vSwitch of host '{name}': its \
                                 vSwitch precondition is NOT checked"
                            ),
                        );
                    }
                    found
                });
                ObservedHost {
                    name,
                    connected: p.connected(),
                    vswitches,
                }
            })
            .collect();
        let primary_connected = site
            .providers
            .iter()
            .any(RecoveryServicesProvider::connected);
        (hosts, primary_connected)
    }

    async fn observe_world(&self, plan: &FailbackPlan) -> Result<World, AzureError> {
        let site = self.site().await?;
        let (hosts, primary_connected) = self.observed_hosts(plan, &site);
        let items = self.items().await?;
        let mut vms = Vec::new();
        for (_, vm) in plan.vms() {
            let name = vm.name.as_str();
            let Some(item) = Self::pick(&items, name)? else {
                self.remember(name, None);
                continue;
            };
            self.remember(name, Some(&item.id));
            let item = self.with_job(item.clone(), name).await?;
            vms.push(self.observed_vm(plan, &site, name, &item)?);
        }
        Ok(World {
            primary_connected,
            hosts,
            vms,
        }
        .sort())
    }

    /// The hosts and VM `vm` alone (see `Provider::observe_vm`): its item
    /// read by ID once a listing gave it.
    async fn observe_one(&self, plan: &FailbackPlan, vm: &str) -> Result<World, AzureError> {
        let site = self.site().await?;
        let (hosts, primary_connected) = self.observed_hosts(plan, &site);
        let vms = match self.find_item(vm).await? {
            Some(item) => vec![self.observed_vm(plan, &site, vm, &item)?],
            None => Vec::new(),
        };
        Ok(World {
            primary_connected,
            hosts,
            vms,
        }
        .sort())
    }

    fn observed_vm(
        &self,
        plan: &FailbackPlan,
        site: &Site,
        name: &str,
        item: &Item,
    ) -> Result<ObservedVm, AzureError> {
        let d = Self::derived(item, name)?;
        let props = &item.item.properties;
        let primary_host = props
            .recovery_services_provider_id
            .as_deref()
            .and_then(|id| {
                site.providers
                    .iter()
                    .find(|p| p.id.eq_ignore_ascii_case(id))
                    .map(|p| Self::host_name(plan, p))
            });
        let booted = d.state >= Lifecycle::CommitPending;
        let has_recovery_point = props.detail("lastRecoveryPointReceived").is_some()
            || props.failover_recovery_point_id.is_some()
            || d.state > Lifecycle::RunningInRecovery;
        let days_in_recovery = props
            .last_successful_failover_time
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .map_or(0, |d| {
                u32::try_from(d.as_secs() / 86_400).unwrap_or(u32::MAX)
            });
        Ok(ObservedVm {
            name: name.to_owned(),
            state: d.state,
            failover_committed: d.failover_committed,
            has_recovery_point,
            recovery_exists: d.state < Lifecycle::Committed,
            recovery_running: match d.state {
                Lifecycle::RunningInRecovery | Lifecycle::AwaitingCompletion => true,
                Lifecycle::Syncing => d.sync_mode != Some(SyncMode::Full),
                _ => false,
            },
            primary_exists: primary_host.is_some() || booted,
            primary_host,
            primary_running: booted,
            sync_mode: d.sync_mode,
            days_in_recovery,
            downtime_ms: None,
        })
    }

    /// The job an action started: named by the 202's headers, else the
    /// item's `currentScenario.jobId` read again.
    async fn started_job(
        &self,
        vm: &str,
        accepted: &Accepted,
        what: &str,
    ) -> Result<Option<String>, AzureError> {
        if let Some(name) = accepted.job_name() {
            return Ok(Some(name));
        }
        if accepted.status != 202 {
            return Ok(None);
        }
        let item = self.item(vm).await?;
        match item.item.properties.current_job_id() {
            Some(id) => Ok(Some(id.to_owned())),
            None => {
                // No job to follow: wait for the operation itself.
                self.client.wait(accepted, what).await?;
                Ok(None)
            }
        }
    }

    /// Waits for `job` to stop running; a failed or cancelled job is an
    /// error naming its cause and the recommended action.
    async fn follow(
        &self,
        vm: &str,
        job: &str,
        first_wait: Option<Duration>,
        what: &str,
    ) -> Result<Job, AzureError> {
        let job = self.client.wait_job(job, first_wait, what).await?;
        match job.state() {
            JobState::Failed | JobState::Cancelled => Err(job_failed(vm, &job)),
            _ => Ok(job),
        }
    }

    /// Restarts a failed job that allows it, and follows it.
    async fn restart(&self, vm: &str, job: &Job) -> Result<Job, AzureError> {
        if !job.allows("Restart") {
            return Err(job_failed(vm, job));
        }
        let what = format!("restarting job '{}' of VM '{vm}'", job.name);
        tracing::info!("{what}");
        let path = format!("{}/restart", self.client.job_path(&job.name));
        let accepted = self.client.post::<()>(&path, None, &what).await?;
        self.follow(vm, &job.name, accepted.retry_after, &what)
            .await
    }

    /// Sends an action on the item and follows the job it starts.
    async fn act<B: serde::Serialize>(
        &self,
        vm: &str,
        item: &ProtectedItem,
        operation: &str,
        body: Option<&B>,
    ) -> Result<(), AzureError> {
        let what = format!("{operation} of VM '{vm}'");
        tracing::info!("{what}");
        let path = format!("{}/{operation}", item.id);
        let accepted = self.client.post(&path, body, &what).await?;
        if let Some(job) = self.started_job(vm, &accepted, &what).await? {
            self.follow(vm, &job, accepted.retry_after, &what).await?;
        }
        Ok(())
    }

    async fn start_failback_async(&self, req: &FailbackRequest) -> Result<(), AzureError> {
        let vm = req.vm.as_str();
        let item = self.item(vm).await?;
        if let Some(job) = &item.job {
            if job_is(job, SCENARIO_FAILOVER) {
                return match job.state() {
                    JobState::Succeeded | JobState::Suspended => Ok(()),
                    JobState::Failed | JobState::Cancelled => self.restart(vm, job).await.map(drop),
                    _ => {
                        tracing::info!(
                            "VM '{vm}': re-attaching to its running failback job '{}'",
                            job.name
                        );
                        let what = format!("failback job of VM '{vm}'");
                        self.follow(vm, &job.name, None, &what).await.map(drop)
                    }
                };
            }
            if job.state().running() {
                return Err(busy(vm, job));
            }
        }
        let state = Self::derived(&item, vm)?.state;
        if state != Lifecycle::RunningInRecovery {
            // Phase 1, or the whole failback, already happened.
            return Ok(());
        }
        let body = self.failback_input(req).await?;
        self.act(vm, &item.item, "plannedFailover", Some(&body))
            .await
    }

    /// The `plannedFailover` body for a request.
    async fn failback_input(
        &self,
        req: &FailbackRequest,
    ) -> Result<PlannedFailoverInput, AzureError> {
        let sync = match req.sync {
            SyncMode::Delta => DataSyncOption::ForDownTime,
            SyncMode::Full => DataSyncOption::ForSynchronization,
        };
        if !req.create_if_missing {
            return Ok(PlannedFailoverInput::failback(
                sync,
                RecoveryVmCreationOption::NoAction,
                None,
            ));
        }
        // The target host's provider (PowerShell's -ServicesProvider), only
        // for Hyper-V sites: VMM places the VM itself (asr-api.md 1a).
        let provider_id = match self.management {
            Management::Vmm => None,
            Management::HypervSite => {
                let site = self.site().await?;
                let provider = Self::provider_for(&site, &req.target_host).ok_or_else(|| {
                    AzureError::conflict(format!(
                        "VM '{}': host '{}' is not registered in site '{}'",
                        req.vm, req.target_host, self.site
                    ))
                })?;
                Some(provider.id.clone())
            }
        };
        Ok(PlannedFailoverInput::failback(
            sync,
            RecoveryVmCreationOption::CreateVmIfNotFound,
            provider_id,
        ))
    }

    async fn complete_async(&self, vm: &str) -> Result<(), AzureError> {
        let item = self.item(vm).await?;
        if let Some(job) = item.job.as_ref().filter(|j| job_is(j, SCENARIO_FAILOVER)) {
            let what = format!("Complete Failover of VM '{vm}'");
            return match job.state() {
                JobState::Succeeded => Ok(()),
                JobState::Suspended => {
                    tracing::info!("{what}: resuming job '{}'", job.name);
                    let body = ResumeJobParams {
                        properties: ResumeJobParamsProperties {
                            comments: Some("failback: Complete Failover".to_owned()),
                        },
                    };
                    let path = format!("{}/resume", self.client.job_path(&job.name));
                    let accepted = self.client.post(&path, Some(&body), &what).await?;
                    let done = self
                        .follow(vm, &job.name, accepted.retry_after, &what)
                        .await?;
                    expect_done(vm, &done, &what)
                }
                JobState::Failed | JobState::Cancelled => {
                    let done = self.restart(vm, job).await?;
                    expect_done(vm, &done, &what)
                }
                _ => {
                    tracing::info!("{what}: re-attaching to running job '{}'", job.name);
                    let done = self.follow(vm, &job.name, None, &what).await?;
                    expect_done(vm, &done, &what)
                }
            };
        }
        if let Some(job) = item.job.as_ref().filter(|j| j.state().running()) {
            return Err(busy(vm, job));
        }
        match Self::derived(&item, vm)?.state {
            Lifecycle::CommitPending | Lifecycle::Committed | Lifecycle::Protected => Ok(()),
            state => Err(AzureError::conflict(format!(
                "cannot complete the failback of VM '{vm}': it is {state}, expected \
                 awaiting-completion (a suspended failback job)"
            ))),
        }
    }

    async fn commit_async(&self, vm: &str) -> Result<(), AzureError> {
        let item = self.item(vm).await?;
        if let Some(job) = item.job.as_ref().filter(|j| j.state().running()) {
            if job_is(job, SCENARIO_COMMIT) {
                tracing::info!(
                    "VM '{vm}': re-attaching to its running commit job '{}'",
                    job.name
                );
                let what = format!("failoverCommit of VM '{vm}'");
                return self.follow(vm, &job.name, None, &what).await.map(drop);
            }
            return Err(busy(vm, job));
        }
        match Self::derived(&item, vm)?.state {
            Lifecycle::CommitPending => {
                self.act::<()>(vm, &item.item, "failoverCommit", None).await
            }
            Lifecycle::Committed | Lifecycle::Protected => Ok(()),
            state => Err(AzureError::conflict(format!(
                "cannot commit VM '{vm}': it is {state}, expected commit-pending"
            ))),
        }
    }

    async fn reverse_replicate_async(&self, vm: &str) -> Result<(), AzureError> {
        let item = self.item(vm).await?;
        if let Some(job) = item.job.as_ref().filter(|j| j.state().running()) {
            if job_is(job, SCENARIO_REPROTECT) {
                tracing::info!(
                    "VM '{vm}': re-attaching to its running reprotect job '{}'",
                    job.name
                );
                let what = format!("reProtect of VM '{vm}'");
                return self.follow(vm, &job.name, None, &what).await.map(drop);
            }
            return Err(busy(vm, job));
        }
        match Self::derived(&item, vm)?.state {
            Lifecycle::Committed => {
                let props = &item.item.properties;
                let os_type = props
                    .provider_specific_details
                    .as_ref()
                    .and_then(|d| d.pointer("/oSDetails/osType"))
                    .and_then(|v| v.as_str())
                    .map(|t| {
                        if t.eq_ignore_ascii_case("Linux") {
                            "Linux"
                        } else {
                            "Windows"
                        }
                        .to_owned()
                    });
                let os_disk = props
                    .provider_specific_details
                    .as_ref()
                    .and_then(|d| d.get("vmDiskDetails"))
                    .and_then(|v| v.as_array())
                    .and_then(|disks| {
                        disks.iter().find(|d| {
                            d.get("vhdType")
                                .and_then(|t| t.as_str())
                                .is_some_and(|t| t.eq_ignore_ascii_case("OperatingSystem"))
                        })
                    })
                    .and_then(|d| d.get("vhdId"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                let body =
                    ReverseReplicationInput::hyperv_to_azure(HyperVReplicaAzureReprotectInput {
                        hv_host_vm_id: props.detail("vmId"),
                        vm_name: props.friendly_name.clone(),
                        os_type,
                        v_hd_id: os_disk,
                        storage_account_id: props.detail("recoveryAzureStorageAccount"),
                        log_storage_account_id: props.detail("recoveryAzureLogStorageAccountId"),
                        ..Default::default()
                    });
                self.act(vm, &item.item, "reProtect", Some(&body)).await
            }
            Lifecycle::Protected => Ok(()),
            state => Err(AzureError::conflict(format!(
                "cannot protect VM '{vm}' again: it is {state}, expected committed"
            ))),
        }
    }
}

/// The ARM path of a fabric (its ID, or built from its name).
fn fabric_path(fabric: &Fabric, vault: &str) -> String {
    if fabric.id.is_empty() {
        format!("{vault}/replicationFabrics/{}", fabric.name)
    } else {
        fabric.id.clone()
    }
}

/// Another job of the item runs: wait for it (re-observe, decide again).
fn busy(vm: &str, job: &Job) -> AzureError {
    AzureError::transient(format!(
        "VM '{vm}' runs another Site Recovery job ('{}', {}, {}); waiting for it to finish",
        job.name,
        job.scenario(),
        job.properties.state.as_deref().unwrap_or("?")
    ))
}

/// A resumed or restarted failback job must end Succeeded.
fn expect_done(vm: &str, job: &Job, what: &str) -> Result<(), AzureError> {
    match job.state() {
        JobState::Succeeded => Ok(()),
        other => Err(AzureError::transient(format!(
            "{what}: job '{}' of VM '{vm}' is {other:?}, not Succeeded; it will be checked again",
            job.name
        ))),
    }
}

/// The message of a failed or cancelled job: its errors, each with the
/// possible causes and the recommended action.
pub fn job_failed(vm: &str, job: &Job) -> AzureError {
    let details: Vec<String> = job
        .properties
        .errors
        .iter()
        .flat_map(models::JobErrorDetails::details)
        .map(|d| d.to_string())
        .collect();
    let state = job.properties.state.as_deref().unwrap_or("Failed");
    AzureError::failed(format!(
        "Site Recovery job '{}' ({}) of VM '{vm}' {}{}",
        job.name,
        job.properties
            .friendly_name
            .as_deref()
            .unwrap_or_else(|| job.scenario()),
        if state.eq_ignore_ascii_case("Cancelled") {
            "was cancelled"
        } else {
            "failed"
        },
        if details.is_empty() {
            ": Site Recovery gave no error details; see the job in the Azure portal".to_owned()
        } else {
            format!(": {}", details.join(" "))
        }
    ))
}

impl Provider for AzureProvider {
    fn observe<'a>(&'a self, plan: &'a FailbackPlan) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async move { self.observe_world(plan).await.map_err(ProviderError::from) })
    }

    fn observe_vm<'a>(
        &'a self,
        plan: &'a FailbackPlan,
        vm: &'a str,
    ) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async move {
            self.observe_one(plan, vm)
                .await
                .map_err(ProviderError::from)
        })
    }

    fn start_failback<'a>(
        &'a self,
        req: &'a FailbackRequest,
        _progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            self.start_failback_async(req)
                .await
                .map_err(ProviderError::from)
        })
    }

    fn complete<'a>(
        &'a self,
        vm: &'a str,
        _progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move { self.complete_async(vm).await.map_err(ProviderError::from) })
    }

    fn commit<'a>(&'a self, vm: &'a str) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move { self.commit_async(vm).await.map_err(ProviderError::from) })
    }

    fn reverse_replicate<'a>(
        &'a self,
        vm: &'a str,
        _progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            self.reverse_replicate_async(vm)
                .await
                .map_err(ProviderError::from)
        })
    }
}

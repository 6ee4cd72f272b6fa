//! The Site Recovery emulator behind `failback lab serve`: the subset of the
//! Site Recovery REST API that the Azure provider calls, answered from a lab
//! world (lab.md), so that the provider is tested end to end on one machine
//! and a pipeline can rehearse offline.
//!
//! # What it serves (under any `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{v}`)
//!
//! | request | answer |
//! |---|---|
//! | `GET replicationProtectedItems` | one item per lab VM (friendly name = VM name) |
//! | `GET replicationFabrics[/{f}]` | one fabric: the lab's primary site (`HyperVSite`) |
//! | `GET replicationFabrics/{f}/replicationRecoveryServicesProviders[/{p}]` | one provider per lab host; `connectionStatus` follows `lab fault disconnect/connect` |
//! | `GET .../replicationProtectionContainers/{c}/replicationProtectedItems[/{i}]` | the items |
//! | `POST .../replicationProtectedItems/{i}/plannedFailover` | a failback job (calls the lab provider's `start_failback`; delta suspends, waiting to be resumed) |
//! | `POST .../replicationProtectedItems/{i}/failoverCommit` | a commit job (the lab's `commit`) |
//! | `POST .../replicationProtectedItems/{i}/reProtect` | a reprotect job (the lab's `reverse_replicate`) |
//! | `GET replicationJobs[/{j}]`, `POST replicationJobs/{j}/resume`, `POST replicationJobs/{j}/restart` | jobs; resume runs the lab's `complete` |
//! | `GET operationresults/{j}` (`Location`), `GET replicationOperationStatus/{j}` (`Azure-AsyncOperation`) | the long-running operation of an action |
//! | `GET /_emulator/calls` (no vault, no token) | how many action requests each item received, by operation |
//! | `GET /_emulator/reads` (no vault, no token) | how many protected-item listings and single-item reads were answered |
//!
//! # Guarantees
//!
//! - Bytes move only through the lab provider's own actions (the
//!   [`Provider`] implementation of [`LabProvider`]): the emulator adds the
//!   REST shapes and the job bookkeeping, never a second sync.
//! - Every request needs `Authorization: Bearer <anything>` (401 otherwise;
//!   any token is accepted) and a known `api-version` (400 otherwise).
//! - Action bodies are checked against the published shapes (`shapes`):
//!   required fields, types, enum values, unknown fields; a mismatch is a
//!   Site Recovery-style 400 naming the field and the allowed values.
//! - Jobs go NotStarted -> InProgress -> (delta failback) Suspended ->
//!   InProgress after `resume` -> Succeeded, or Failed with
//!   `serviceErrorDetails` (code, message, possible causes, recommended
//!   action). A failed job that stopped half-way allows `Restart`.
//! - Lab faults show: a disconnected host's provider is `NotConnected`; a
//!   stuck shutdown fails the job that needs the Azure VM off.
//!
//! # Assumptions
//!
//! Jobs live in this process's memory; the lab world on disk is the truth
//! for everything else. After a restart of the emulator, a VM caught half-way
//! shows a failed job that allows `Restart`. The protection-state strings
//! of the phases Site Recovery does not publish are this emulator's own
//! (docs/azure.md, "The emulator").

mod shapes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use shapes::Rejection;

use crate::provider::lab::{self, LabProvider, LabVm, LabWorld};
use crate::provider::{FailbackRequest, Lifecycle, ProgressFn, Provider, ProviderError};

use super::models::{DataSyncOption, RecoveryVmCreationOption};
use super::observe::{SCENARIO_COMMIT, SCENARIO_FAILOVER, SCENARIO_REPROTECT};

/// The api-versions the emulator answers (asr-api.md section 0: the stable
/// versions from 2024-10-01 on, and the current preview).
pub const API_VERSIONS: &[&str] = &[
    "2024-10-01",
    "2025-01-01",
    "2025-02-01",
    "2025-08-01",
    "2026-01-01",
    "2026-02-01",
    "2026-03-31-preview",
    "2026-05-01",
];

/// The fixed segments of a vault's resource ID.
const VAULT_SEGMENTS: [&str; 5] = [
    "subscriptions",
    "resourceGroups",
    "providers",
    "Microsoft.RecoveryServices",
    "vaults",
];

/// Settings of an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// The lab world it serves.
    pub lab: PathBuf,
    /// `Retry-After` (seconds) on 202 answers and running jobs.
    pub retry_after: u64,
}

/// A running emulator's state.
struct Emulator {
    lab_dir: PathBuf,
    lab: LabProvider,
    retry_after: u64,
    jobs: Mutex<Jobs>,
    /// Actions accepted (answered 202): operation -> VM -> count.
    calls: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Protected-item reads answered: `list` or `get` -> count.
    reads: Mutex<BTreeMap<String, u64>>,
}

#[derive(Default)]
struct Jobs {
    by_name: BTreeMap<String, EmJob>,
    /// The latest job of each VM.
    latest: BTreeMap<String, String>,
    next: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum JobKind {
    Failback(FailbackRequest),
    Commit,
    Reprotect,
}

/// Where a failback job is: phase 1 (or the whole full sync), waiting for
/// "Complete Failover", or the final phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Sync,
    Manual,
    Final,
}

#[derive(Clone, Debug)]
struct EmJob {
    name: String,
    vm: String,
    vault: String,
    kind: JobKind,
    state: &'static str,
    phase: Phase,
    errors: Vec<Value>,
    start: SystemTime,
    end: Option<SystemTime>,
    comments: Option<String>,
}

impl EmJob {
    fn running(&self) -> bool {
        matches!(self.state, "NotStarted" | "InProgress")
    }

    fn delta(&self) -> bool {
        matches!(&self.kind, JobKind::Failback(r) if r.sync == crate::plan::SyncMode::Delta)
    }
}

/// Serves the lab in `options.lab` on `listener` until `shutdown` resolves.
///
/// Errors: the lab world cannot be opened, or the server fails.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    options: EmulatorOptions,
    shutdown: F,
) -> Result<(), String>
where
    F: Future<Output = ()> + Send + 'static,
{
    let lab = LabProvider::open(&options.lab).map_err(|e| e.to_string())?;
    let state = Arc::new(Emulator {
        lab_dir: lab.dir().to_path_buf(),
        lab,
        retry_after: options.retry_after,
        jobs: Mutex::new(Jobs::default()),
        calls: Mutex::new(BTreeMap::new()),
        reads: Mutex::new(BTreeMap::new()),
    });
    let app = axum::Router::new().fallback(handle).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// A deterministic GUID-shaped name for `kind` + `key`.
fn guid(kind: &str, key: &str) -> String {
    let h = blake3::hash(format!("{kind}\u{0}{key}").as_bytes()).to_hex();
    let h = h.as_str();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Names of the emulated site's resources.
struct Names {
    vault: String,
    fabric: String,
    container: String,
}

impl Names {
    fn new(vault: &str, world: &LabWorld) -> Names {
        Names {
            vault: vault.to_owned(),
            fabric: guid("fabric", &world.primary.site),
            container: format!("cloud_{}", guid("container", &world.primary.site)),
        }
    }

    fn fabric_id(&self) -> String {
        format!("{}/replicationFabrics/{}", self.vault, self.fabric)
    }

    fn container_id(&self) -> String {
        format!(
            "{}/replicationProtectionContainers/{}",
            self.fabric_id(),
            self.container
        )
    }

    fn item_id(&self, vm: &str) -> String {
        format!(
            "{}/replicationProtectedItems/{}",
            self.container_id(),
            guid("item", vm)
        )
    }

    fn provider_id(&self, host: &str) -> String {
        format!(
            "{}/replicationRecoveryServicesProviders/{}",
            self.fabric_id(),
            guid("provider", host)
        )
    }

    fn job_id(&self, job: &str) -> String {
        format!("{}/replicationJobs/{job}", self.vault)
    }
}

/// The request's context: vault prefix, base URL, api-version, request ID.
struct Ctx {
    vault: String,
    base: String,
    api_version: String,
    request_id: String,
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, axum::Json(value.clone())).into_response()
}

/// A Site Recovery-style error: a generic outer error with the specific one
/// in `details` ([S24] in asr-api.md).
fn reject(r: &Rejection, request_id: &str) -> Response {
    let outer = match r.status {
        400 => "BadRequest",
        404 => "NotFound",
        409 => "Conflict",
        _ => "Error",
    };
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(
        status,
        &json!({ "error": {
            "code": outer,
            "message": "The operation has failed.",
            "details": [{
                "code": r.code,
                "message": r.message,
                "possibleCauses": r.possible_causes,
                "recommendedAction": r.recommended_action,
                "clientRequestId": request_id,
                "activityId": guid("activity", &format!("{request_id}{:?}", SystemTime::now())),
            }]
        }}),
    )
}

/// An ARM-level error (authentication, api-version, routing).
fn arm_error(status: StatusCode, code: &str, message: String) -> Response {
    let mut response = json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert("WWW-Authenticate", HeaderValue::from_static("Bearer"));
    }
    response
}

async fn handle(
    State(em): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path == "/_emulator/calls" {
        let calls = lock(&em.calls).clone();
        return json_response(StatusCode::OK, &json!(calls));
    }
    if path == "/_emulator/reads" {
        let reads = lock(&em.reads).clone();
        return json_response(StatusCode::OK, &json!(reads));
    }
    // Authentication: any bearer token, but one must be there.
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.".to_owned(),
            );
        }
        Some(v) => {
            let ok = v.split_once(' ').is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty()
            });
            if !ok {
                return arm_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "The access token is invalid: expected 'Authorization: Bearer <token>'."
                        .to_owned(),
                );
            }
        }
    }
    let api_version = uri.query().unwrap_or_default().split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == "api-version")
            .map(|(_, v)| v.to_owned())
    });
    let Some(api_version) = api_version else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests."
                .to_owned(),
        );
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let fixed_ok = segments.len() >= 8
        && [0, 2, 4, 5, 6]
            .iter()
            .zip(VAULT_SEGMENTS)
            .all(|(i, want)| segments[*i].eq_ignore_ascii_case(want));
    if !fixed_ok {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The emulator serves Recovery Services vaults only; no resource at '{path}'."),
        );
    }
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for API version '{api_version}' and type \
                 'vaults'. The supported api-versions are '{}'.",
                API_VERSIONS.join(", ")
            ),
        );
    }
    let vault = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
        segments[1], segments[3], segments[7]
    );
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let ctx = Ctx {
        vault,
        base: format!("http://{host}"),
        api_version,
        request_id: headers
            .get("x-ms-client-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let rest: Vec<String> = segments[8..].iter().map(|s| (*s).to_owned()).collect();
    tracing::info!(%method, path = %segments[8..].join("/"), "emulator request");
    match route(&em, &ctx, &method, &rest, &body).await {
        Ok(response) => response,
        Err(r) => reject(&r, &ctx.request_id),
    }
}

async fn world(em: &Emulator) -> Result<LabWorld, Rejection> {
    let dir = em.lab_dir.clone();
    tokio::task::spawn_blocking(move || lab::show(&dir))
        .await
        .map_err(|e| Rejection::conflict(e.to_string(), "Retry.".to_owned()))?
        .map_err(|e| Rejection {
            status: 500,
            code: "InternalError",
            message: format!("The lab world cannot be read: {e}"),
            possible_causes: "The lab directory changed under the emulator.".to_owned(),
            recommended_action: "Check the lab with `failback lab show`.".to_owned(),
        })
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

async fn route(
    em: &Arc<Emulator>,
    ctx: &Ctx,
    method: &Method,
    rest: &[String],
    body: &[u8],
) -> Result<Response, Rejection> {
    let world = world(em).await?;
    adopt_interrupted(em, ctx, &world);
    let names = Names::new(&ctx.vault, &world);
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let list = |v: Vec<Value>| {
        Ok(json_response(
            StatusCode::OK,
            &json!({ "value": v, "nextLink": null }),
        ))
    };
    let fabric_ok = |f: &str| same(f, &names.fabric);
    let container_ok = |c: &str| same(c, &names.container);
    match r.as_slice() {
        ["replicationProtectedItems"] if get => {
            read(em, "list");
            list(items(em, &names, &world))
        }
        ["replicationFabrics"] if get => list(vec![fabric_json(&names, &world)]),
        ["replicationFabrics", f] if get && fabric_ok(f) => ok(fabric_json(&names, &world)),
        [
            "replicationFabrics",
            f,
            "replicationRecoveryServicesProviders",
        ] if get && fabric_ok(f) => list(
            world
                .primary
                .hosts
                .iter()
                .map(|h| provider_json(&names, &world, &h.name))
                .collect(),
        ),
        [
            "replicationFabrics",
            f,
            "replicationRecoveryServicesProviders",
            p,
        ] if get && fabric_ok(f) => {
            match world
                .primary
                .hosts
                .iter()
                .find(|h| same(&guid("provider", &h.name), p))
            {
                Some(h) => ok(provider_json(&names, &world, &h.name)),
                None => Err(Rejection::not_found(format!(
                    "No recovery services provider '{p}'."
                ))),
            }
        }
        ["replicationFabrics", f, "replicationProtectionContainers"] if get && fabric_ok(f) => {
            list(vec![json!({
                "id": names.container_id(), "name": names.container,
                "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers",
                "properties": { "friendlyName": world.primary.site, "fabricType": "HyperVSite", "role": "Primary" }
            })])
        }
        [
            "replicationFabrics",
            f,
            "replicationProtectionContainers",
            c,
            "replicationProtectedItems",
        ] if get && fabric_ok(f) && container_ok(c) => {
            read(em, "list");
            list(items(em, &names, &world))
        }
        [
            "replicationFabrics",
            f,
            "replicationProtectionContainers",
            c,
            "replicationProtectedItems",
            i,
        ] if get && fabric_ok(f) && container_ok(c) => {
            read(em, "get");
            let vm = vm_of_item(&world, i)?;
            ok(item_json(em, &names, &world, vm))
        }
        [
            "replicationFabrics",
            f,
            "replicationProtectionContainers",
            c,
            "replicationProtectedItems",
            i,
            op,
        ] if post && fabric_ok(f) && container_ok(c) => {
            let vm = vm_of_item(&world, i)?.name.clone();
            let response = item_action(em, ctx, &names, &world, &vm, op, body)?;
            count(em, op, &vm);
            Ok(response)
        }
        ["replicationJobs"] if get => {
            let jobs: Vec<Value> = lock(&em.jobs)
                .by_name
                .values()
                .filter(|j| same(&j.vault, &ctx.vault))
                .map(|j| job_json(&names, j))
                .collect();
            list(jobs)
        }
        ["replicationJobs", j] if get => ok(job_json(&names, &find_job(em, ctx, j)?)),
        ["replicationJobs", j, op] if post => {
            let job = find_job(em, ctx, j)?;
            let response = job_action(em, ctx, &job, op, body)?;
            count(em, op, &job.vm);
            Ok(response)
        }
        ["operationresults", j] if get => operation_result(em, ctx, &names, &world, j),
        ["replicationOperationStatus", j] if get => {
            let job = find_job(em, ctx, j)?;
            let status = match job.state {
                "NotStarted" | "InProgress" => "InProgress",
                "Failed" => "Failed",
                // Succeeded, and Suspended: the action was carried out up to
                // the manual step (the job itself says what follows).
                _ => "Succeeded",
            };
            let mut v = json!({ "id": format!("{}/replicationOperationStatus/{}", ctx.vault, job.name),
                "name": job.name, "status": status, "startTime": rfc3339(job.start) });
            if status == "Failed" {
                v["error"] = failed_job_error(&job);
            }
            Ok(with_retry_after(
                json_response(StatusCode::OK, &v),
                em.retry_after,
                status == "InProgress",
            ))
        }
        _ if !get && !post => Ok(arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The emulator does not serve {method} here."),
        )),
        _ => Err(Rejection::not_found(format!(
            "The emulator serves no {method} '{}' under the vault.",
            rest.join("/")
        ))),
    }
}

/// A VM half-way through a failback that this emulator has no job for (it
/// was restarted meanwhile) gets one: suspended when phase 1 is done,
/// otherwise failed and restartable, so that the provider resumes or
/// restarts it instead of starting a second failover.
fn adopt_interrupted(em: &Emulator, ctx: &Ctx, world: &LabWorld) {
    let mut jobs = lock(&em.jobs);
    for vm in world.vms.iter().filter(|v| mid_failback(v.state)) {
        if jobs.latest.contains_key(&vm.name) {
            continue;
        }
        let sync = vm.sync_mode.unwrap_or_default();
        let (state, phase) = match vm.state {
            Lifecycle::AwaitingCompletion => ("Suspended", Phase::Manual),
            Lifecycle::FinalSync => ("Failed", Phase::Final),
            _ => ("Failed", Phase::Sync),
        };
        let name = guid("job", &format!("{}/adopted", vm.name));
        let mut job = EmJob {
            name: name.clone(),
            vm: vm.name.clone(),
            vault: ctx.vault.clone(),
            kind: JobKind::Failback(FailbackRequest {
                vm: vm.name.clone(),
                sync,
                create_if_missing: false,
                target_host: vm.primary.host.clone().unwrap_or_default(),
            }),
            state,
            phase,
            errors: Vec::new(),
            start: SystemTime::now(),
            end: None,
            comments: None,
        };
        if state == "Failed" {
            job.end = Some(SystemTime::now());
            job.errors = vec![json!({
                "serviceErrorDetails": {
                    "code": "JobInterrupted",
                    "message": format!("The failback job of '{}' was interrupted (the emulator restarted while it ran).", vm.name),
                    "possibleCauses": "The emulator process stopped during the job.",
                    "recommendedAction": "Restart the job.",
                },
                "errorLevel": "Error",
            })];
        }
        jobs.by_name.insert(name.clone(), job);
        jobs.latest.insert(vm.name.clone(), name);
    }
}

fn with_retry_after(mut response: Response, secs: u64, running: bool) -> Response {
    if running && let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert("Retry-After", v);
    }
    response
}

fn read(em: &Emulator, kind: &str) {
    *lock(&em.reads).entry(kind.to_owned()).or_default() += 1;
}

fn count(em: &Emulator, op: &str, vm: &str) {
    *lock(&em.calls)
        .entry(op.to_owned())
        .or_default()
        .entry(vm.to_owned())
        .or_default() += 1;
}

fn vm_of_item<'a>(world: &'a LabWorld, item: &str) -> Result<&'a LabVm, Rejection> {
    world
        .vms
        .iter()
        .find(|v| same(&guid("item", &v.name), item))
        .ok_or_else(|| Rejection::not_found(format!("No replication protected item '{item}'.")))
}

fn find_job(em: &Emulator, ctx: &Ctx, name: &str) -> Result<EmJob, Rejection> {
    lock(&em.jobs)
        .by_name
        .values()
        .find(|j| same(&j.name, name) && same(&j.vault, &ctx.vault))
        .cloned()
        .ok_or_else(|| Rejection::not_found(format!("No job '{name}' in this vault.")))
}

fn fabric_json(names: &Names, world: &LabWorld) -> Value {
    json!({
        "id": names.fabric_id(), "name": names.fabric,
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics",
        "properties": {
            "friendlyName": world.primary.site,
            "encryptionDetails": { "kekState": "None" },
            "customDetails": { "instanceType": "HyperVSite" },
            "health": "Normal"
        }
    })
}

fn provider_json(names: &Names, world: &LabWorld, host: &str) -> Value {
    let connected = world.primary.connected
        && world
            .primary
            .hosts
            .iter()
            .any(|h| h.name == host && h.connected);
    json!({
        "id": names.provider_id(host), "name": guid("provider", host),
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationRecoveryServicesProviders",
        "properties": {
            "friendlyName": host,
            "fabricType": "HyperVSite",
            "fabricFriendlyName": world.primary.site,
            "providerVersion": "5.1.0.0",
            "serverVersion": "10.0",
            "connectionStatus": if connected { "Connected" } else { "NotConnected" },
            "lastHeartBeat": rfc3339(SystemTime::now()),
            "protectedItemCount": world.vms.iter().filter(|v| v.primary.host.as_deref() == Some(host)).count(),
            "allowedScenarios": ["Refresh", "Delete"]
        }
    })
}

fn items(em: &Emulator, names: &Names, world: &LabWorld) -> Vec<Value> {
    world
        .vms
        .iter()
        .map(|vm| item_json(em, names, world, vm))
        .collect()
}

/// Whether `state` is half-way through a failback.
fn mid_failback(state: Lifecycle) -> bool {
    matches!(
        state,
        Lifecycle::Syncing | Lifecycle::AwaitingCompletion | Lifecycle::FinalSync
    )
}

/// A protected item from a lab VM and its latest job.
fn item_json(em: &Emulator, names: &Names, world: &LabWorld, vm: &LabVm) -> Value {
    let job = {
        let jobs = lock(&em.jobs);
        jobs.latest
            .get(&vm.name)
            .and_then(|n| jobs.by_name.get(n))
            .cloned()
    };
    // The job the item runs: a running or suspended one, or a failed one
    // that left the failback half-way (restartable).
    let current = job.filter(|j| {
        j.running() || j.state == "Suspended" || (j.state == "Failed" && mid_failback(vm.state))
    });
    let (protection, description, location, allowed): (&str, &str, &str, &[&str]) = match vm.state {
        Lifecycle::RunningInRecovery if !vm.failover_committed => (
            "PlannedFailoverCommitRequired",
            "Planned failover finished",
            "Recovery",
            &[
                "CompleteMigration",
                "Commit",
                "DisableProtection",
                "ChangePit",
            ],
        ),
        Lifecycle::RunningInRecovery => (
            "PlannedFailoverStatesBegin",
            "Planned failover committed",
            "Recovery",
            &["CompleteMigration", "DisableProtection", "Failback"],
        ),
        Lifecycle::Syncing | Lifecycle::AwaitingCompletion | Lifecycle::FinalSync => (
            "FailbackInProgress",
            "Failback in progress",
            "Recovery",
            &["DisableProtection"],
        ),
        Lifecycle::CommitPending => (
            "PlannedFailoverCommitRequired",
            "Failback finished; commit pending",
            "Primary",
            &["Commit", "DisableProtection"],
        ),
        Lifecycle::Committed => (
            "UnprotectedStatesBegin",
            "Failback committed; not protected",
            "Primary",
            &["ReverseReplicate", "DisableProtection"],
        ),
        Lifecycle::Protected => (
            "Protected",
            "Protected",
            "Primary",
            &[
                "PlannedFailover",
                "UnplannedFailover",
                "DisableProtection",
                "TestFailover",
            ],
        ),
    };
    let scenario = match &current {
        Some(j) => json!({
            "scenarioName": scenario_name(j),
            "jobId": names.job_id(&j.name),
            "startTime": rfc3339(j.start),
        }),
        None => json!({
            "scenarioName": "None",
            "jobId": names.job_id("None"),
            "startTime": "1753-01-01T01:01:01Z",
        }),
    };
    let failed_over = SystemTime::now()
        .checked_sub(Duration::from_secs(
            u64::from(vm.days_in_recovery) * 86_400 + 3_600,
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let disks: Vec<Value> = vm
        .recovery
        .disks
        .iter()
        .chain(vm.primary.disks.iter())
        .enumerate()
        .filter(|(i, d)| {
            // Each disk once, by name.
            vm.recovery
                .disks
                .iter()
                .chain(vm.primary.disks.iter())
                .position(|o| o.name == d.name)
                == Some(*i)
        })
        .enumerate()
        .map(|(n, (_, d))| {
            json!({
                "vhdId": guid("vhd", &format!("{}/{}", vm.name, d.name)),
                "vhdName": d.name,
                "vhdType": if n == 0 { "OperatingSystem" } else { "DataDisk" },
                "maxSizeMB": d.size / (1024 * 1024),
            })
        })
        .collect();
    let mut details = json!({
        "instanceType": "HyperVReplicaAzure",
        "vmId": guid("vm", &vm.name),
        "recoveryAzureVmName": vm.name,
        "recoveryAzureStorageAccount": format!("/subscriptions/emulator/resourceGroups/lab/providers/Microsoft.Storage/storageAccounts/{}", world.recovery.site.to_lowercase()),
        "oSDetails": { "osType": "Windows" },
        "vmDiskDetails": disks,
        "useManagedDisks": "false",
    });
    if vm.has_recovery_point {
        details["lastRecoveryPointReceived"] = json!(rfc3339(failed_over));
    }
    let mut props = json!({
        "friendlyName": vm.name,
        "protectedItemType": "HyperVVirtualMachine",
        "protectableItemId": format!("{}/replicationProtectableItems/{}", names.container_id(), guid("vm", &vm.name)),
        "primaryFabricFriendlyName": world.primary.site,
        "primaryFabricProvider": "HyperVSite",
        "recoveryFabricFriendlyName": "Microsoft Azure",
        "recoveryFabricId": "Microsoft Azure",
        "primaryProtectionContainerFriendlyName": world.primary.site,
        "recoveryProtectionContainerFriendlyName": "Microsoft Azure",
        "protectionState": protection,
        "protectionStateDescription": description,
        "activeLocation": location,
        "allowedOperations": allowed,
        "replicationHealth": "Normal",
        "failoverHealth": "Normal",
        "healthErrors": [],
        "currentScenario": scenario,
        "lastSuccessfulFailoverTime": rfc3339(failed_over),
        "providerSpecificDetails": details,
    });
    if vm.primary.exists
        && let Some(host) = &vm.primary.host
    {
        props["recoveryServicesProviderId"] = json!(names.provider_id(host));
    }
    json!({
        "id": names.item_id(&vm.name),
        "name": guid("item", &vm.name),
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectedItems",
        "properties": props,
    })
}

fn scenario_name(job: &EmJob) -> &'static str {
    match job.kind {
        JobKind::Failback(_) => SCENARIO_FAILOVER,
        JobKind::Commit => SCENARIO_COMMIT,
        JobKind::Reprotect => SCENARIO_REPROTECT,
    }
}

fn job_json(names: &Names, job: &EmJob) -> Value {
    let task = |name: &str, friendly: &str, instance: &str, state: &str| {
        json!({ "taskId": guid("task", &format!("{}{name}", job.name)), "name": name,
                "friendlyName": friendly, "state": state, "stateDescription": state,
                "allowedActions": [], "taskType": instance,
                "customDetails": { "instanceType": instance }, "errors": [] })
    };
    let failed = job.state == "Failed";
    let at = |phase: Phase| -> &'static str {
        match (job.phase, phase) {
            (p, q) if p == q && failed => "Failed",
            (p, q) if p == q && job.state == "Suspended" => "Suspended",
            (p, q) if p == q && job.state == "NotStarted" => "NotStarted",
            (p, q) if p == q && job.state == "Succeeded" => "Succeeded",
            (p, q) if p == q => "InProgress",
            (Phase::Sync, _) => "NotStarted",
            (Phase::Manual, Phase::Sync) => "Succeeded",
            (Phase::Manual, _) => "NotStarted",
            (Phase::Final, _) => "Succeeded",
        }
    };
    let (friendly, tasks) = match &job.kind {
        JobKind::Failback(req) if req.sync == crate::plan::SyncMode::Delta => (
            "Planned failover (failback)",
            vec![
                task(
                    "DataSynchronization",
                    "Synchronize data (delta, virtual machine in Azure running)",
                    "JobTaskDetails",
                    at(Phase::Sync),
                ),
                json!({ "taskId": guid("task", &format!("{}manual", job.name)), "name": "CompleteFailover",
                    "friendlyName": "Complete Failover", "state": at(Phase::Manual), "stateDescription": at(Phase::Manual),
                    "allowedActions": if job.state == "Suspended" { json!(["Resume"]) } else { json!([]) },
                    "taskType": "ManualActionTask",
                    "customDetails": { "instanceType": "ManualActionTaskDetails", "name": "Complete Failover",
                        "instructions": "Resume the job to shut down the virtual machine in Azure, send the final changes and start it on-premises.",
                        "observation": job.comments } }),
                task(
                    "FinalSynchronization",
                    "Shut down in Azure, final synchronization, start on-premises",
                    "JobTaskDetails",
                    at(Phase::Final),
                ),
            ],
        ),
        JobKind::Failback(_) => (
            "Planned failover (failback)",
            vec![task(
                "FullSynchronization",
                "Shut down in Azure, full download, start on-premises",
                "JobTaskDetails",
                at(Phase::Sync),
            )],
        ),
        JobKind::Commit => (
            "Commit",
            vec![task(
                "Commit",
                "Commit: delete the virtual machine in Azure",
                "JobTaskDetails",
                at(Phase::Sync),
            )],
        ),
        JobKind::Reprotect => (
            "Reverse replicate",
            vec![task(
                "ReverseReplicate",
                "Protect the virtual machine again towards Azure",
                "JobTaskDetails",
                at(Phase::Sync),
            )],
        ),
    };
    let allowed: &[&str] = match job.state {
        "Suspended" => &["Resume"],
        "Failed" => &["Restart"],
        _ => &[],
    };
    let description = match job.state {
        "Suspended" => "WaitingForManualAction",
        "Succeeded" => "Completed",
        other => other,
    };
    json!({
        "id": names.job_id(&job.name),
        "name": job.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationJobs",
        "properties": {
            "activityId": guid("activity", &job.name),
            "scenarioName": scenario_name(job),
            "friendlyName": friendly,
            "state": job.state,
            "stateDescription": description,
            "tasks": tasks,
            "errors": job.errors,
            "startTime": rfc3339(job.start),
            "endTime": job.end.map(rfc3339),
            "allowedActions": allowed,
            "targetObjectId": names.item_id(&job.vm),
            "targetObjectName": job.vm,
            "targetInstanceType": "ProtectionEntity",
            "customDetails": {
                "instanceType": if matches!(job.kind, JobKind::Failback(_)) { "FailoverJobDetails" } else { "AsrJobDetails" },
                "affectedObjectDetails": {},
            }
        }
    })
}

/// The `error` of a failed operation status: the job's first service error.
fn failed_job_error(job: &EmJob) -> Value {
    match job
        .errors
        .first()
        .and_then(|e| e.get("serviceErrorDetails"))
    {
        Some(s) => json!({ "code": s["code"], "message": s["message"],
            "possibleCauses": s["possibleCauses"], "recommendedAction": s["recommendedAction"] }),
        None => json!({ "code": "JobFailed", "message": "The job failed." }),
    }
}

/// `GET operationresults/{job}` (the `Location` of an action): 202 while the
/// job runs, then the item (200), or the job's error (400) if it failed.
fn operation_result(
    em: &Emulator,
    ctx: &Ctx,
    names: &Names,
    world: &LabWorld,
    name: &str,
) -> Result<Response, Rejection> {
    let job = find_job(em, ctx, name)?;
    if job.running() {
        let mut response = StatusCode::ACCEPTED.into_response();
        lro_headers(&mut response, em, ctx, &job.name);
        return Ok(response);
    }
    if job.state == "Failed" {
        let e = failed_job_error(&job);
        return Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": { "code": "BadRequest", "message": "The operation has failed.", "details": [e] } }),
        ));
    }
    let vm = world
        .vms
        .iter()
        .find(|v| v.name == job.vm)
        .ok_or_else(|| Rejection::not_found(format!("VM '{}' left the lab.", job.vm)))?;
    Ok(json_response(
        StatusCode::OK,
        &item_json(em, names, world, vm),
    ))
}

fn lro_headers(response: &mut Response, em: &Emulator, ctx: &Ctx, job: &str) {
    let headers = response.headers_mut();
    let location = format!(
        "{}{}/operationresults/{job}?api-version={}",
        ctx.base, ctx.vault, ctx.api_version
    );
    let status = format!(
        "{}{}/replicationOperationStatus/{job}?api-version={}",
        ctx.base, ctx.vault, ctx.api_version
    );
    for (name, value) in [
        ("Location", location),
        ("Azure-AsyncOperation", status),
        ("Retry-After", em.retry_after.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

fn accepted(em: &Emulator, ctx: &Ctx, job: &str) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    lro_headers(&mut response, em, ctx, job);
    response
}

/// The VM's running or suspended job, which blocks a new one.
fn busy_job(jobs: &Jobs, vm: &str) -> Option<EmJob> {
    jobs.latest
        .get(vm)
        .and_then(|n| jobs.by_name.get(n))
        .filter(|j| j.running() || j.state == "Suspended")
        .cloned()
}

fn not_now(vm: &LabVm, operation: &str, expected: &str) -> Rejection {
    Rejection::conflict(
        format!(
            "The operation '{operation}' is not allowed for the replication protected item '{}' in its \
             current state ({}); it needs {expected}.",
            vm.name, vm.state
        ),
        "Refresh the protected item and check its allowed operations.".to_owned(),
    )
}

#[allow(clippy::too_many_arguments)]
fn item_action(
    em: &Arc<Emulator>,
    ctx: &Ctx,
    names: &Names,
    world: &LabWorld,
    vm_name: &str,
    operation: &str,
    body: &[u8],
) -> Result<Response, Rejection> {
    let vm = world
        .vms
        .iter()
        .find(|v| v.name == vm_name)
        .ok_or_else(|| Rejection::not_found(format!("No VM '{vm_name}'.")))?;
    let kind = match operation {
        "plannedFailover" => {
            let input = shapes::planned_failover(body)?;
            let target_host = match &input.provider_id_for_alternate_recovery {
                Some(id) => world
                    .primary
                    .hosts
                    .iter()
                    .find(|h| same(&names.provider_id(&h.name), id))
                    .map(|h| h.name.clone())
                    .ok_or_else(|| {
                        Rejection::invalid(
                            format!(
                                "'{id}' is not a recovery services provider of the fabric '{}'.",
                                world.primary.site
                            ),
                            "Use the ID of a provider listed under replicationRecoveryServicesProviders of the primary fabric.".to_owned(),
                        )
                    })?,
                None => match (&vm.primary.host, vm.primary.exists) {
                    (Some(h), true) => h.clone(),
                    _ if input.recovery_vm_creation_option
                        == RecoveryVmCreationOption::CreateVmIfNotFound =>
                    {
                        return Err(Rejection::invalid(
                            format!(
                                "The virtual machine '{}' does not exist on-premises; creating it needs \
                                 'providerIdForAlternateRecovery' (the host to create it on).",
                                vm.name
                            ),
                            "Send providerIdForAlternateRecovery with the ID of the target host's provider.".to_owned(),
                        ));
                    }
                    _ => {
                        return Err(Rejection {
                            status: 400,
                            code: "OnPremisesVmNotFound",
                            message: format!(
                                "The virtual machine '{}' does not exist on the primary site.",
                                vm.name
                            ),
                            possible_causes: "The on-premises virtual machine was deleted.".to_owned(),
                            recommended_action: "Fail back with recoveryVmCreationOption 'CreateVmIfNotFound' and the target host's provider.".to_owned(),
                        });
                    }
                },
            };
            if !(matches!(vm.state, Lifecycle::RunningInRecovery) && vm.failover_committed
                || vm.state == Lifecycle::Syncing)
            {
                return Err(not_now(
                    vm,
                    operation,
                    "a committed failover to Azure (allowed operation 'Failback')",
                ));
            }
            JobKind::Failback(FailbackRequest {
                vm: vm.name.clone(),
                sync: match input.data_sync_option {
                    DataSyncOption::ForDownTime => crate::plan::SyncMode::Delta,
                    DataSyncOption::ForSynchronization => crate::plan::SyncMode::Full,
                },
                create_if_missing: input.recovery_vm_creation_option
                    == RecoveryVmCreationOption::CreateVmIfNotFound,
                target_host,
            })
        }
        "failoverCommit" => {
            shapes::no_body(body, operation)?;
            if vm.state == Lifecycle::RunningInRecovery && !vm.failover_committed {
                return Err(Rejection::invalid(
                    "The emulator does not commit failovers to Azure; its lab worlds start committed.".to_owned(),
                    "Recreate the lab with `failback lab init`.".to_owned(),
                ));
            }
            if vm.state != Lifecycle::CommitPending {
                return Err(not_now(
                    vm,
                    operation,
                    "a failback that waits for commit (allowed operation 'Commit')",
                ));
            }
            JobKind::Commit
        }
        "reProtect" => {
            shapes::reprotect(body)?;
            if vm.state != Lifecycle::Committed {
                return Err(not_now(
                    vm,
                    operation,
                    "a committed failback (allowed operation 'ReverseReplicate')",
                ));
            }
            JobKind::Reprotect
        }
        other => {
            return Err(Rejection::not_found(format!(
                "The emulator serves no action '{other}' on protected items (it serves plannedFailover, failoverCommit, reProtect)."
            )));
        }
    };
    let name = {
        let mut jobs = lock(&em.jobs);
        if let Some(job) = busy_job(&jobs, vm_name) {
            return Err(Rejection::conflict(
                format!(
                    "The job '{}' ({}) of the protected item '{vm_name}' is {}; another operation cannot start.",
                    job.name,
                    scenario_name(&job),
                    job.state
                ),
                "Wait for the job to finish, or resume it.".to_owned(),
            ));
        }
        jobs.next += 1;
        let name = guid(
            "job",
            &format!("{vm_name}/{}/{:?}", jobs.next, SystemTime::now()),
        );
        jobs.by_name.insert(
            name.clone(),
            EmJob {
                name: name.clone(),
                vm: vm_name.to_owned(),
                vault: ctx.vault.clone(),
                kind,
                state: "NotStarted",
                phase: Phase::Sync,
                errors: Vec::new(),
                start: SystemTime::now(),
                end: None,
                comments: None,
            },
        );
        jobs.latest.insert(vm_name.to_owned(), name.clone());
        name
    };
    run(Arc::clone(em), name.clone());
    Ok(accepted(em, ctx, &name))
}

fn job_action(
    em: &Arc<Emulator>,
    ctx: &Ctx,
    job: &EmJob,
    operation: &str,
    body: &[u8],
) -> Result<Response, Rejection> {
    match operation {
        "resume" => {
            let comments = shapes::resume(body)?;
            {
                let mut jobs = lock(&em.jobs);
                let Some(j) = jobs.by_name.get_mut(&job.name) else {
                    return Err(Rejection::not_found(format!("No job '{}'.", job.name)));
                };
                if j.state != "Suspended" {
                    return Err(Rejection::conflict(
                        format!(
                            "The job '{}' is {}; only a suspended job can be resumed.",
                            j.name, j.state
                        ),
                        "Check the job's allowed actions.".to_owned(),
                    ));
                }
                j.phase = Phase::Final;
                j.state = "NotStarted";
                j.comments = comments;
            }
            run(Arc::clone(em), job.name.clone());
            Ok(accepted(em, ctx, &job.name))
        }
        "restart" => {
            shapes::no_body(body, operation)?;
            {
                let mut jobs = lock(&em.jobs);
                let Some(j) = jobs.by_name.get_mut(&job.name) else {
                    return Err(Rejection::not_found(format!("No job '{}'.", job.name)));
                };
                if j.state != "Failed" {
                    return Err(Rejection::conflict(
                        format!(
                            "The job '{}' is {}; only a failed job can be restarted.",
                            j.name, j.state
                        ),
                        "Check the job's allowed actions.".to_owned(),
                    ));
                }
                j.state = "NotStarted";
                j.errors.clear();
                j.end = None;
            }
            run(Arc::clone(em), job.name.clone());
            Ok(accepted(em, ctx, &job.name))
        }
        other => Err(Rejection::not_found(format!(
            "The emulator serves no job action '{other}' (it serves resume, restart)."
        ))),
    }
}

/// Runs the job's current phase through the lab provider, in the background.
fn run(em: Arc<Emulator>, name: String) {
    tokio::spawn(async move {
        let Some((kind, phase, vm)) = ({
            let mut jobs = lock(&em.jobs);
            jobs.by_name.get_mut(&name).map(|j| {
                j.state = "InProgress";
                (j.kind.clone(), j.phase, j.vm.clone())
            })
        }) else {
            return;
        };
        let progress: ProgressFn = Arc::new(|_| {});
        let result = match (&kind, phase) {
            (JobKind::Failback(req), Phase::Sync) => em.lab.start_failback(req, progress).await,
            (JobKind::Failback(_), _) => em.lab.complete(&vm, progress).await,
            (JobKind::Commit, _) => em.lab.commit(&vm).await,
            (JobKind::Reprotect, _) => em.lab.reverse_replicate(&vm, progress).await,
        };
        let stuck = match &result {
            Err(_) => stuck_shutdown(&em.lab_dir, &vm).await,
            Ok(()) => false,
        };
        let mut jobs = lock(&em.jobs);
        let Some(job) = jobs.by_name.get_mut(&name) else {
            return;
        };
        match result {
            Ok(()) if job.delta() && phase == Phase::Sync => {
                job.state = "Suspended";
                job.phase = Phase::Manual;
            }
            Ok(()) => {
                job.state = "Succeeded";
                job.end = Some(SystemTime::now());
            }
            Err(e) => {
                tracing::info!(job = %name, vm = %vm, "emulator job failed: {e}");
                job.state = "Failed";
                job.end = Some(SystemTime::now());
                job.errors = vec![job_error(&name, &e, stuck)];
            }
        }
    });
}

async fn stuck_shutdown(dir: &Path, vm: &str) -> bool {
    let dir = dir.to_path_buf();
    let vm = vm.to_owned();
    tokio::task::spawn_blocking(move || {
        lab::show(&dir)
            .ok()
            .and_then(|w| {
                w.vms
                    .iter()
                    .find(|v| v.name == vm)
                    .map(|v| v.faults.stuck_shutdown)
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// `JobErrorDetails` for a lab failure.
fn job_error(job: &str, e: &ProviderError, stuck: bool) -> Value {
    let (code, causes, action) = if stuck {
        (
            "AzureVmShutdownTimedOut",
            "The virtual machine in Azure did not confirm that it is off; the final synchronization waits for a confirmed shutdown so that no data is lost.",
            "Shut the virtual machine down in Azure (lab: `failback lab fault clear`), then restart the job or run the failback again.",
        )
    } else {
        match e {
            ProviderError::Transient(_) => (
                "OnPremisesProviderNotConnected",
                "The Hyper-V host, or the Site Recovery provider on it, is not connected to Azure.",
                "Reconnect the host (lab: `failback lab fault connect`), then restart the job or run the failback again.",
            ),
            ProviderError::Conflict(_) => (
                "FailbackPreconditionFailed",
                "The virtual machine is not in a state that allows this step.",
                "Fix the condition named in the message, then run the failback again.",
            ),
            ProviderError::Failed(_) => (
                "FailbackStepFailed",
                "A step of the job failed on the primary site.",
                "Fix the cause named in the message, then restart the job or run the failback again.",
            ),
        }
    };
    json!({
        "serviceErrorDetails": {
            "code": code,
            "message": e.to_string(),
            "possibleCauses": causes,
            "recommendedAction": action,
            "activityId": guid("activity", job),
        },
        "providerErrorDetails": null,
        "errorLevel": "Error",
        "creationTime": rfc3339(SystemTime::now()),
        "taskId": guid("task", job),
    })
}

//! The emulator in process, driven by the typed client: both long-running
//! operation styles (`Azure-AsyncOperation` and `Location`), job naming,
//! and the client-secret token flow against a local token endpoint.

use std::sync::Arc;

use serde_json::Value;

use super::{EmulatorOptions, serve};
use crate::plan::FailbackPlan;
use crate::provider::azure::client::{Accepted, AsrClient};
use crate::provider::azure::models::{
    DataSyncOption, JobState, PlannedFailoverInput, ProtectedItem, RecoveryVmCreationOption,
};
use crate::provider::azure::token::{StaticToken, TokenSource};
use crate::provider::azure::{AzureConfig, PollPolicy};
use crate::provider::lab;

const PLAN: &str = "
apiVersion: failback/v1
kind: FailbackPlan
metadata: { name: emulator-unit }
spec:
  primary: { site: dc1, hosts: [{ name: hv-01, vswitches: [Production] }] }
  recovery: { site: azure }
  groups:
    - name: g
      vms:
        - { name: vm-1, host: hv-01, sync: full }
        - { name: vm-2, host: hv-01, sync: full }
";

const VAULT: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v";

struct Running {
    _dir: tempfile::TempDir,
    client: AsrClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let plan: FailbackPlan = serde_saphyr::from_str(PLAN).unwrap();
    let options = lab::InitOptions {
        disk_size: 256 * 1024,
        ..lab::InitOptions::default()
    };
    lab::init(&dir.path().join("lab"), &plan, &options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = EmulatorOptions {
        lab: dir.path().join("lab"),
        retry_after: 0,
    };
    tokio::spawn(serve(listener, options, async move {
        let _ = rx.await;
    }));
    let config = AzureConfig::new(
        Some(VAULT),
        None,
        &format!("http://{addr}"),
        "2025-08-01",
        None,
    )
    .unwrap();
    let mut client = AsrClient::new(
        &config,
        reqwest::Client::new(),
        Arc::new(StaticToken::new("test".into())),
    );
    client.poll = PollPolicy {
        first: std::time::Duration::from_millis(20),
        ..PollPolicy::default()
    };
    Running {
        _dir: dir,
        client,
        stop: Some(tx),
    }
}

async fn item(client: &AsrClient, vm: &str) -> ProtectedItem {
    let items: Vec<ProtectedItem> = client
        .list(&format!("{VAULT}/replicationProtectedItems"), "list")
        .await
        .unwrap();
    items
        .into_iter()
        .find(|i| i.properties.friendly_name.as_deref() == Some(vm))
        .unwrap()
}

async fn failback(client: &AsrClient, vm: &str) -> Accepted {
    let item = item(client, vm).await;
    let body = PlannedFailoverInput::failback(
        DataSyncOption::ForSynchronization,
        RecoveryVmCreationOption::NoAction,
        None,
    );
    client
        .post(
            &format!("{}/plannedFailover", item.id),
            Some(&body),
            "plannedFailover",
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn both_long_running_operation_styles_reach_the_final_item() {
    let em = start().await;
    // Azure-AsyncOperation first, then the final GET of Location.
    let accepted = failback(&em.client, "vm-1").await;
    assert_eq!(accepted.status, 202);
    assert!(accepted.async_operation.is_some() && accepted.location.is_some());
    let job = accepted.job_name().unwrap();
    let done: Value = em.client.wait(&accepted, "wait").await.unwrap().unwrap();
    assert_eq!(done["properties"]["friendlyName"], "vm-1");
    assert_eq!(done["properties"]["activeLocation"], "Primary");
    assert_eq!(
        em.client.job(&job, "job").await.unwrap().state(),
        JobState::Succeeded
    );

    // Location only: 202 until the job ends, then the item.
    let accepted = Accepted {
        async_operation: None,
        ..failback(&em.client, "vm-2").await
    };
    let done: Value = em.client.wait(&accepted, "wait").await.unwrap().unwrap();
    assert_eq!(done["properties"]["allowedOperations"][0], "Commit");

    // Not allowed now: a conflict, nothing started.
    let item = item(&em.client, "vm-2").await;
    let body = PlannedFailoverInput::failback(
        DataSyncOption::ForDownTime,
        RecoveryVmCreationOption::NoAction,
        None,
    );
    let e = em
        .client
        .post(
            &format!("{}/plannedFailover", item.id),
            Some(&body),
            "again",
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(409), "{e}");
    assert_eq!(e.class, crate::provider::azure::ErrorClass::Conflict);
}

#[tokio::test]
async fn the_client_secret_flow_posts_the_form_and_caches_the_token() {
    use axum::routing::post;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/tenant-1/oauth2/v2.0/token",
        post(move |body: String| {
            let record = Arc::clone(&record);
            async move {
                record.lock().unwrap().push(body);
                axum::Json(
                    serde_json::json!({ "access_token": "tok-123", "expires_in": 3600, "token_type": "Bearer" }),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let credential = crate::provider::azure::token::ClientSecretCredential::for_test(
        reqwest::Client::new(),
        reqwest::Url::parse(&format!("http://{addr}")).unwrap(),
        "tenant-1",
        "client-1",
        "s3cret&value",
        "https://management.azure.com/",
    );
    let token = credential.token().await.unwrap();
    assert_eq!(token.secret(), "tok-123");
    let again = credential.token().await.unwrap();
    assert_eq!(again.secret(), "tok-123");
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "cached: {bodies:?}");
    assert_eq!(
        bodies[0],
        "grant_type=client_credentials&client_id=client-1&client_secret=s3cret%26value&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
    );
    assert!(!format!("{credential:?}").contains("s3cret"));
}

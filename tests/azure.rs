//! The Azure provider end to end: `failback lab serve` (the Site Recovery
//! emulator) as a child process on 127.0.0.1, and `apply --provider azure`
//! against it, compared with the same plan on the lab provider. Loopback
//! only; the token is `FAILBACK_AZURE_TOKEN=test`.

use std::process::Stdio;

use serde_json::Value;

use crate::support::{Case, Emulator, Provider, VAULT, disk_bytes, http, stderr, stdout};

/// The shared plan with its vault in `spec.recovery.vault`.
fn plan() -> String {
    crate::support::PLAN
        .replace("name: case\n", "name: azure-case\n")
        .replace(
            "    site: azure\n",
            &format!("    site: azure\n    vault: {VAULT}\n"),
        )
}

#[test]
fn a_multi_group_plan_converges_through_the_emulator_as_on_the_lab() {
    // The same world twice: one failed back by the lab provider, one by the
    // Azure provider through the emulator.
    let lab = Case::new(&plan());
    lab.init(&["--seed", "7"]);
    let out = lab.run(&["apply", lab.plan_path()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let azure = Case::on(Provider::Azure, &plan());
    azure.init(&["--seed", "7"]);
    let inventory = azure.export_inventory();
    let emulator = azure.emulator();
    let out = azure
        .azure_at(
            &emulator.url,
            &[
                "apply",
                azure.plan_path(),
                &format!("--hyperv-inventory={}", inventory.display()),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(!stderr(&out).contains("NOT checked"), "{}", stderr(&out));

    for name in ["db-01", "app-01", "app-02"] {
        let (a, b) = (lab.vm(name), azure.vm(name));
        for field in ["state", "active", "protection"] {
            assert_eq!(a[field], b[field], "{name}.{field}");
        }
        assert_eq!(b["state"], "protected");
        assert_eq!(a["primary"]["host"], b["primary"]["host"]);
        assert!(!disk_bytes(&b["primary"]).is_empty());
        assert_eq!(
            disk_bytes(&a["primary"]),
            disk_bytes(&b["primary"]),
            "{name}: primary disks differ"
        );
        assert_eq!(
            disk_bytes(&a["replica"]),
            disk_bytes(&b["replica"]),
            "{name}: replica disks differ"
        );
    }
    let calls = emulator.calls();
    for (op, n) in [
        ("plannedFailover", 1),
        ("failoverCommit", 1),
        ("reProtect", 1),
    ] {
        for vm in ["db-01", "app-01", "app-02"] {
            assert_eq!(calls[op][vm], n, "{op} of {vm}: {calls}");
        }
    }
    assert_eq!(
        calls["resume"]["db-01"], 1,
        "delta resumes its job: {calls}"
    );
    // The vault's items are listed once per group (its first observation);
    // each step then reads its VM's item alone, by ID, whatever the
    // vault's size.
    let reads = emulator.reads();
    let steps = calls
        .as_object()
        .unwrap()
        .values()
        .flat_map(|by_vm| by_vm.as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum::<u64>();
    assert!(
        reads["list"].as_u64().unwrap() <= 2,
        "listings: {reads} for {steps} actions"
    );
    assert!(
        reads["get"].as_u64().unwrap() >= steps,
        "single-item reads: {reads} for {steps} actions"
    );
    assert!(
        calls["resume"].get("app-02").is_none(),
        "full has no resume: {calls}"
    );

    // A second apply takes no step; the plan is empty.
    let again = azure
        .azure_at(
            &emulator.url,
            &["apply", azure.plan_path(), "--format", "json"],
        )
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        !stdout(&again).contains("\"step-started\""),
        "{}",
        stdout(&again)
    );
    azure.assert_converged();
    azure.assert_no_unverified_boot();
    assert_eq!(emulator.calls(), calls, "nothing was sent again");
}

#[test]
fn without_an_inventory_the_vswitch_check_is_reported_not_made() {
    let case = Case::on(Provider::Azure, &plan());
    case.init(&[]);
    assert_eq!(
        case.run(&["lab", "fault", "remove-vswitch", "hv-01", "Backup"])
            .status
            .code(),
        Some(0)
    );
    let emulator = case.emulator();
    // Azure cannot see vSwitches: a warning, never a silent pass.
    let out = case
        .azure_at(&emulator.url, &["plan", case.plan_path()])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("vSwitch precondition is NOT checked"),
        "{}",
        stderr(&out)
    );
    // With an inventory exported from the hosts, the missing vSwitch blocks.
    let inventory = case.export_inventory();
    let out = case
        .azure_at(
            &emulator.url,
            &[
                "apply",
                case.plan_path(),
                &format!("--hyperv-inventory={}", inventory.display()),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("vswitch-missing"), "{}", stdout(&out));
    assert_eq!(case.vm("db-01")["state"], "running-in-recovery");
    assert!(
        emulator.calls().get("plannedFailover").is_none(),
        "nothing was started"
    );
}

#[test]
fn killed_in_the_middle_of_a_job_the_next_apply_reattaches_to_it() {
    let case = Case::on(Provider::Azure, &plan());
    case.init(&["--latency", "500"]);
    let emulator = case.emulator();
    let mut apply = spawn_apply(&case, &emulator.url);
    // Wait until db-01's failback job was started, then kill the run.
    wait_while_running(&mut apply, || {
        emulator.calls()["plannedFailover"]["db-01"]
            .as_u64()
            .is_some()
    });
    apply.kill().unwrap();
    apply.wait().unwrap();
    let item_state = case.vm("db-01")["state"].clone();
    assert_ne!(item_state, "protected", "killed mid-run");

    let out = case
        .azure_at(&emulator.url, &["apply", case.plan_path(), "-v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("re-attaching"), "{}", stderr(&out));
    let calls = emulator.calls();
    for vm in ["db-01", "app-01", "app-02"] {
        assert_eq!(
            calls["plannedFailover"][vm], 1,
            "one planned failover per VM: {calls}"
        );
    }
    case.assert_converged();
    case.assert_no_unverified_boot();
}

#[test]
fn an_emulator_restarted_in_the_middle_of_a_job_loses_no_byte() {
    // The emulator keeps its jobs in memory: restarted, it shows a VM caught
    // half-way with a failed job that allows Restart, and the next apply
    // goes on from there.
    let case = Case::on(
        Provider::Azure,
        &plan().replace("    commit: auto\n", "    commit: never\n"),
    );
    case.init(&["--latency", "300"]);
    let first = Emulator::start(&case.lab_dir());
    let mut apply = spawn_apply(&case, &first.url);
    // Kill it once the job has started to change the world.
    wait_while_running(&mut apply, || {
        case.vm("db-01")["state"] != "running-in-recovery"
    });
    drop(first);
    apply.kill().unwrap();
    apply.wait().unwrap();

    let out = case.apply(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    for vm in ["db-01", "app-01", "app-02"] {
        assert_eq!(case.vm(vm)["state"], "commit-pending");
        case.assert_primary_holds_recovery_bytes(vm);
    }
    let calls = case.emulator().calls();
    assert_eq!(calls["restart"]["db-01"], 1, "restarted: {calls}");
    assert!(
        calls["plannedFailover"].get("db-01").is_none(),
        "not started again: {calls}"
    );
    case.assert_converged();
    case.assert_no_unverified_boot();
}

#[test]
fn killed_at_step_boundaries_the_same_command_converges_without_a_second_job() {
    for n in [2, 4, 7] {
        let case = Case::on(Provider::Azure, &plan());
        case.init(&[]);
        let emulator = case.emulator();
        let out = case
            .azure_at(&emulator.url, &["apply", case.plan_path()])
            .env("FAILBACK_TEST_ABORT_AT_STEP", n.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            None,
            "step {n}: aborted: {}",
            stderr(&out)
        );
        let again = case
            .azure_at(&emulator.url, &["apply", case.plan_path()])
            .output()
            .unwrap();
        assert_eq!(
            again.status.code(),
            Some(0),
            "after step {n}: {}",
            stderr(&again)
        );
        let calls = emulator.calls();
        for vm in ["db-01", "app-01", "app-02"] {
            assert_eq!(calls["plannedFailover"][vm], 1, "step {n}: {calls}");
        }
        case.assert_converged();
    }
}

#[test]
fn a_rejected_request_and_a_failed_job_give_the_documented_messages() {
    let case = Case::on(Provider::Azure, &plan());
    case.init(&[]);
    let emulator = case.emulator();

    // No token: 401.
    let items = format!("{VAULT}/replicationProtectedItems?api-version=2025-08-01");
    let (status, body) = http(&emulator.url, "GET", &items, None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AuthenticationFailed"));

    // A body that does not match the published shape: an ASR-style 400.
    let (status, body) = http(&emulator.url, "GET", &items, Some("test"), None);
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let item = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["properties"]["friendlyName"] == "db-01")
        .unwrap();
    let url = format!(
        "{}/plannedFailover?api-version=2025-08-01",
        item["id"].as_str().unwrap()
    );
    let typo = r#"{"properties":{"failoverDirection":"RecoveryToPrimary","providerSpecificDetails":{"instanceType":"HyperVReplicaAzureFailback","dataSyncOption":"ForSyncronization","recoveryVmCreationOption":"NoAction"}}}"#;
    let (status, body) = http(&emulator.url, "POST", &url, Some("test"), Some(typo));
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let detail = &error["error"]["details"][0];
    assert_eq!(detail["code"], "InvalidParameter");
    assert_eq!(
        detail["message"],
        "'ForSyncronization' is not a valid value of 'properties.providerSpecificDetails.dataSyncOption'."
    );
    assert_eq!(
        detail["recommendedAction"],
        "Use one of: ForDownTime, ForSynchronization (spelled exactly)."
    );
    assert!(
        case.vm("db-01")["state"] == "running-in-recovery",
        "nothing started"
    );

    // A 400 through the provider: the code, message and what to do.
    let out = case
        .azure_at(
            &emulator.url,
            &["apply", case.plan_path(), "--api-version", "2015-01-01"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Site Recovery refused listing the fabrics (HTTP 400, NoRegisteredProviderFound): NoRegisteredProviderFound: No registered resource provider found for API version '2015-01-01'"),
        "{}",
        stdout(&out)
    );

    // A failed job: its error, causes and recommended action; the Azure VM
    // keeps running; after the fix the same command restarts the job.
    assert_eq!(
        case.run(&["lab", "fault", "stuck-shutdown", "db-01"])
            .status
            .code(),
        Some(0)
    );
    let out = case
        .azure_at(&emulator.url, &["apply", case.plan_path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Site Recovery job '"), "{text}");
    assert!(text.contains("of VM 'db-01' failed: AzureVmShutdownTimedOut: recovery VM 'db-01' did not confirm it is off"), "{text}");
    assert!(
        text.contains("Recommended action: Shut the virtual machine down in Azure"),
        "{text}"
    );
    let vm = case.vm("db-01");
    assert_eq!(vm["recovery"]["running"], true, "{vm:#}");
    assert_eq!(vm["primary"]["running"], false);

    assert_eq!(case.run(&["lab", "fault", "clear"]).status.code(), Some(0));
    let out = case
        .azure_at(&emulator.url, &["apply", case.plan_path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let calls = emulator.calls();
    assert_eq!(
        calls["restart"]["db-01"], 1,
        "the failed job is restarted: {calls}"
    );
    assert_eq!(
        calls["plannedFailover"]["db-01"], 1,
        "not started twice: {calls}"
    );
    case.assert_converged();
    case.assert_no_unverified_boot();
}

#[test]
fn a_vault_is_required_and_must_agree_with_the_plan() {
    let case = Case::on(
        Provider::Azure,
        &plan().replace(&format!("    vault: {VAULT}\n"), ""),
    );
    let out = case
        .azure_at("http://127.0.0.1:9", &["plan", case.plan_path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no Recovery Services vault"),
        "{}",
        stderr(&out)
    );

    let case = Case::on(Provider::Azure, &plan());
    let out = case
        .azure_at("http://127.0.0.1:9", &["plan", case.plan_path()])
        .env("FAILBACK_AZURE_VAULT", VAULT.replace("vault-1", "vault-2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("make them agree"), "{}", stderr(&out));

    let out = case
        .azure_at("http://10.0.0.1:80", &["plan", case.plan_path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plain http on a non-loopback address"),
        "{}",
        stderr(&out)
    );
}

/// `apply` of `case` through the emulator at `url`, in the background, its
/// output dropped.
fn spawn_apply(case: &Case, url: &str) -> std::process::Child {
    case.azure_at(url, &["apply", case.plan_path()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `started` holds; the run must still be going meanwhile.
fn wait_while_running(apply: &mut std::process::Child, mut started: impl FnMut() -> bool) {
    while !started() {
        assert!(
            apply.try_wait().unwrap().is_none(),
            "apply ended before starting a job"
        );
        std::thread::yield_now();
    }
}

//! The Azure provider end to end: `failback lab serve` (the Site Recovery
//! emulator) as a child process on 127.0.0.1, and `apply --provider azure`
//! against it, compared with the same plan on the lab provider. Loopback
//! only; the token is `FAILBACK_AZURE_TOKEN=test`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const VAULT: &str =
    "/subscriptions/0000/resourceGroups/rg-dr/providers/Microsoft.RecoveryServices/vaults/vault-1";

const PLAN: &str = "\
apiVersion: failback/v1
kind: FailbackPlan
metadata:
  name: azure-case
spec:
  primary:
    site: dc1
    hosts:
      - name: hv-01
        vswitches: [Production, Backup]
      - name: hv-02
        vswitches: [Production]
  recovery:
    site: azure
    vault: /subscriptions/0000/resourceGroups/rg-dr/providers/Microsoft.RecoveryServices/vaults/vault-1
  defaults:
    commit: auto
  groups:
    - name: data
      vms:
        - name: db-01
          host: hv-01
          networks: [{ vswitch: Backup }]
          verify: { command: [\"true\"], timeout: 10s }
    - name: app
      vms:
        - name: app-01
          host: hv-02
          networks: [{ vswitch: Production }]
          verify: { command: [\"true\"], timeout: 10s }
        - name: app-02
          host: hv-02
          sync: full
          verify: { command: [\"true\"], timeout: 10s }
";

fn failback() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_failback"));
    c.env_remove("FAILBACK_PROVIDER")
        .env_remove("FAILBACK_AZURE_VAULT")
        .env_remove("FAILBACK_ARM_ENDPOINT")
        .env_remove("FAILBACK_AZURE_API_VERSION")
        .env_remove("FAILBACK_HYPERV_INVENTORY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `failback lab serve` on 127.0.0.1:0; killed on drop.
struct Emulator {
    child: Child,
    url: String,
}

impl Emulator {
    fn start(lab: &Path) -> Emulator {
        let mut child = failback()
            .args([
                "lab",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--retry-after",
                "0",
                "--lab",
            ])
            .arg(lab)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Emulator { child, url }
    }

    /// Action requests the emulator received: operation -> VM -> count.
    fn calls(&self) -> Value {
        let (status, body) = http(&self.url, "GET", "/_emulator/calls", None, None);
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request to the emulator (loopback only).
fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap();
    assert!(addr.starts_with("127.0.0.1:"));
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// A plan, a lab and a state directory in a temporary folder.
struct Case {
    dir: tempfile::TempDir,
    plan: PathBuf,
}

impl Case {
    fn new(plan: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, plan).unwrap();
        Case { dir, plan: path }
    }

    fn lab(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = failback();
        c.args(args)
            .arg("--lab")
            .arg(self.lab())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn plan(&self) -> &str {
        self.plan.to_str().unwrap()
    }

    fn init(&self, extra: &[&str]) {
        let mut args = vec!["lab", "init", self.plan(), "--disk-size", "1MiB"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "lab init: {}", stderr(&out));
    }

    /// A command against the emulator at `url`, with the Azure provider.
    fn azure(&self, url: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.args(["--provider", "azure", "--arm-endpoint", url])
            .env("FAILBACK_AZURE_TOKEN", "test");
        c
    }

    fn show(&self) -> Value {
        let out = self.run(&["lab", "show", "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn vm(&self, name: &str) -> Value {
        self.show()["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    }

    /// `Get-VMSwitch | Select Name, ComputerName | ConvertTo-Json`, as an
    /// administrator would export it from the lab's hosts.
    fn export_inventory(&self) -> PathBuf {
        let world = self.show();
        let mut switches = Vec::new();
        for host in world["primary"]["hosts"].as_array().unwrap() {
            for s in host["vswitches"].as_array().unwrap() {
                switches.push(serde_json::json!({ "Name": s, "ComputerName": host["name"].as_str().unwrap().to_uppercase() }));
            }
        }
        let path = self.dir.path().join("inventory.json");
        std::fs::write(&path, serde_json::to_string_pretty(&switches).unwrap()).unwrap();
        path
    }

    fn assert_converged(&self, url: &str) {
        let out = self
            .azure(
                url,
                &[
                    "plan",
                    self.plan(),
                    "--detailed-exitcode",
                    "--format",
                    "json",
                ],
            )
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "plan is not empty: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["converged"], true);
    }

    /// Every power-on in the lab's log follows a verification of each disk.
    fn assert_no_unverified_boot(&self) {
        let log = std::fs::read_to_string(self.lab().join("events.jsonl")).unwrap_or_default();
        let mut verified = std::collections::HashSet::new();
        for line in log.lines() {
            let e: Value = serde_json::from_str(line).unwrap();
            let vm = e["vm"].as_str().unwrap_or_default().to_owned();
            match e["event"].as_str() {
                Some("verified") => {
                    assert_eq!(e["shutdownDigest"], e["primaryDigest"]);
                    verified.insert((vm, e["disk"].as_str().unwrap_or_default().to_owned()));
                }
                Some("power-on") => {
                    for disk in e["disks"].as_array().unwrap() {
                        assert!(
                            verified.contains(&(vm.clone(), disk.as_str().unwrap().to_owned()))
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

/// The bytes of each disk of `holder["disks"]`.
fn disk_bytes(holder: &Value) -> Vec<Vec<u8>> {
    holder["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| std::fs::read(d["path"].as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn a_multi_group_plan_converges_through_the_emulator_as_on_the_lab() {
    // The same world twice: one failed back by the lab provider, one by the
    // Azure provider through the emulator.
    let lab = Case::new(PLAN);
    lab.init(&["--seed", "7"]);
    let out = lab.run(&["apply", lab.plan()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let azure = Case::new(PLAN);
    azure.init(&["--seed", "7"]);
    let inventory = azure.export_inventory();
    let emulator = Emulator::start(&azure.lab());
    let out = azure
        .azure(
            &emulator.url,
            &[
                "apply",
                azure.plan(),
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
    assert!(
        calls["resume"].get("app-02").is_none(),
        "full has no resume: {calls}"
    );

    // A second apply takes no step; the plan is empty.
    let again = azure
        .azure(&emulator.url, &["apply", azure.plan(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        !stdout(&again).contains("\"step-started\""),
        "{}",
        stdout(&again)
    );
    azure.assert_converged(&emulator.url);
    azure.assert_no_unverified_boot();
    assert_eq!(emulator.calls(), calls, "nothing was sent again");
}

#[test]
fn without_an_inventory_the_vswitch_check_is_reported_not_made() {
    let case = Case::new(PLAN);
    case.init(&[]);
    assert_eq!(
        case.run(&["lab", "fault", "remove-vswitch", "hv-01", "Backup"])
            .status
            .code(),
        Some(0)
    );
    let emulator = Emulator::start(&case.lab());
    // Azure cannot see vSwitches: a warning, never a silent pass.
    let out = case
        .azure(&emulator.url, &["plan", case.plan()])
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
        .azure(
            &emulator.url,
            &[
                "apply",
                case.plan(),
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
    let case = Case::new(PLAN);
    case.init(&["--latency", "500"]);
    let emulator = Emulator::start(&case.lab());
    let mut apply = case
        .azure(&emulator.url, &["apply", case.plan()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until db-01's failback job was started, then kill the run.
    while emulator.calls()["plannedFailover"]["db-01"]
        .as_u64()
        .is_none()
    {
        assert!(
            apply.try_wait().unwrap().is_none(),
            "apply ended before starting a job"
        );
        std::thread::yield_now();
    }
    apply.kill().unwrap();
    apply.wait().unwrap();
    let item_state = case.vm("db-01")["state"].clone();
    assert_ne!(item_state, "protected", "killed mid-run");

    let out = case
        .azure(&emulator.url, &["apply", case.plan(), "-v"])
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
    case.assert_converged(&emulator.url);
    case.assert_no_unverified_boot();
}

#[test]
fn killed_at_step_boundaries_the_same_command_converges_without_a_second_job() {
    for n in [2, 4, 7] {
        let case = Case::new(PLAN);
        case.init(&[]);
        let emulator = Emulator::start(&case.lab());
        let out = case
            .azure(&emulator.url, &["apply", case.plan()])
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
            .azure(&emulator.url, &["apply", case.plan()])
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
        case.assert_converged(&emulator.url);
    }
}

#[test]
fn a_rejected_request_and_a_failed_job_give_the_documented_messages() {
    let case = Case::new(PLAN);
    case.init(&[]);
    let emulator = Emulator::start(&case.lab());

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
        .azure(
            &emulator.url,
            &["apply", case.plan(), "--api-version", "2015-01-01"],
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
        .azure(&emulator.url, &["apply", case.plan()])
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
        .azure(&emulator.url, &["apply", case.plan()])
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
    case.assert_converged(&emulator.url);
    case.assert_no_unverified_boot();
}

#[test]
fn a_vault_is_required_and_must_agree_with_the_plan() {
    let case = Case::new(&PLAN.replace(&format!("    vault: {VAULT}\n"), ""));
    let out = case
        .azure("http://127.0.0.1:9", &["plan", case.plan()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no Recovery Services vault"),
        "{}",
        stderr(&out)
    );

    let case = Case::new(PLAN);
    let out = case
        .azure("http://127.0.0.1:9", &["plan", case.plan()])
        .env("FAILBACK_AZURE_VAULT", VAULT.replace("vault-1", "vault-2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("make them agree"), "{}", stderr(&out));

    let out = case
        .azure("http://10.0.0.1:80", &["plan", case.plan()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plain http on a non-loopback address"),
        "{}",
        stderr(&out)
    );
}

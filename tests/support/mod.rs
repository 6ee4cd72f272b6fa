//! What the integration tests share: a [`Case`] (a plan, a lab and a state
//! directory in a temporary folder) that runs the binary on either provider,
//! the Site Recovery [`Emulator`] as a child process, and the checks of a
//! finished run (convergence, the lab's event log, disk bytes).
//!
//! On [`Provider::Lab`] a command is `failback <cmd> --provider lab`; on
//! [`Provider::Azure`] the case starts `failback lab serve` on the same lab
//! (127.0.0.1, a random port, killed when the case is dropped) the first
//! time a command needs it, and adds `--provider azure`, `--arm-endpoint`,
//! `--vault`, `--hyperv-inventory` and `FAILBACK_AZURE_TOKEN=test`. The lab
//! tooling (`lab init`, `lab fault`, `lab show`, `lab write`) always runs
//! directly on the lab: it stands for the world both providers act on.

use std::cell::OnceCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// Every setting and test hook a child process could inherit from the
/// environment of the test run; each command starts without them.
const INHERITED: [&str; 20] = [
    "FAILBACK_PROVIDER",
    "FAILBACK_LAB",
    "FAILBACK_STATE_DIR",
    "FAILBACK_AZURE_VAULT",
    "FAILBACK_ARM_ENDPOINT",
    "FAILBACK_AZURE_API_VERSION",
    "FAILBACK_HYPERV_INVENTORY",
    "FAILBACK_AZURE_TOKEN",
    "RUST_LOG",
    "FAILBACK_TEST_ABORT_AT_STEP",
    "FAILBACK_TEST_ABORT_AT_SYNC_BYTES",
    "FAILBACK_TEST_ABORT_AT_WORLD_WRITE",
    "FAILBACK_TEST_FAIL_WORLD_WRITE",
    "FAILBACK_TEST_FAIL_WORLD_FSYNC",
    "FAILBACK_TEST_FAIL_DISK_WRITE",
    "FAILBACK_TEST_FAIL_DISK_FSYNC",
    "FAILBACK_TEST_LOSE_REPLY",
    "NO_COLOR",
    "FAILBACK_RELIABILITY_SEED",
    "FAILBACK_RELIABILITY_RUNS",
];

/// The vault every emulated run names (the emulator serves any vault ID).
pub(crate) const VAULT: &str =
    "/subscriptions/0000/resourceGroups/rg-dr/providers/Microsoft.RecoveryServices/vaults/vault-1";

/// Three VMs in two groups on two hosts: db-01 (delta, on the `Backup`
/// vSwitch of hv-01), app-01 (delta) and app-02 (full) on hv-02.
pub(crate) const PLAN: &str = "\
apiVersion: failback/v1
kind: FailbackPlan
metadata:
  name: case
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

/// The provider a case's `plan`, `apply`, `status` and `approve` go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// The embedded lab provider.
    Lab,
    /// The Azure provider against `failback lab serve` on the case's lab.
    Azure,
}

/// A plan, a lab and a state directory in a temporary folder.
pub(crate) struct Case {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) plan: PathBuf,
    pub(crate) provider: Provider,
    emulator: OnceCell<Emulator>,
    /// Set on every command of the case.
    env: Vec<(String, String)>,
}

impl Case {
    /// A case on the lab provider.
    pub(crate) fn new(plan: &str) -> Case {
        Case::on(Provider::Lab, plan)
    }

    pub(crate) fn on(provider: Provider, plan: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, plan).unwrap();
        Case {
            dir,
            plan: path,
            provider,
            emulator: OnceCell::new(),
            env: Vec::new(),
        }
    }

    /// The case with `key=value` in the environment of every command.
    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn lab_dir(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn plan_path(&self) -> &str {
        self.plan.to_str().unwrap()
    }

    /// `failback ARGS` on the case's lab and state directory, without a
    /// provider option: the lab tooling, and the default (lab) provider.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = failback();
        c.args(args)
            .arg("--lab")
            .arg(self.lab_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `failback ARGS` through the case's provider. On Azure this starts the
    /// emulator if it is not running yet and exports the hosts' vSwitches
    /// from the lab as it is now, as an administrator would before the run.
    pub(crate) fn provider_cmd(&self, args: &[&str]) -> Command {
        match self.provider {
            Provider::Lab => {
                let mut c = self.cmd(args);
                c.args(["--provider", "lab"]);
                c
            }
            Provider::Azure => {
                let url = self.emulator().url.clone();
                let inventory = self.export_inventory();
                let mut c = self.azure_at(&url, args);
                c.args(["--vault", VAULT])
                    .arg(format!("--hyperv-inventory={}", inventory.display()));
                c
            }
        }
    }

    /// `failback ARGS` through the case's provider, run to its end.
    pub(crate) fn exec(&self, args: &[&str]) -> Output {
        self.provider_cmd(args).output().unwrap()
    }

    /// `failback ARGS --provider azure --arm-endpoint URL` with a test
    /// token, and no vault or inventory option.
    pub(crate) fn azure_at(&self, url: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.args(["--provider", "azure", "--arm-endpoint", url])
            .env("FAILBACK_AZURE_TOKEN", "test");
        c
    }

    /// The emulator serving this case's lab; started on first use.
    pub(crate) fn emulator(&self) -> &Emulator {
        self.emulator
            .get_or_init(|| Emulator::start(&self.lab_dir()))
    }

    /// `lab init` with 1 MiB disks.
    pub(crate) fn init(&self, extra: &[&str]) {
        let mut args = vec!["lab", "init", self.plan_path(), "--disk-size", "1MiB"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "lab init: {}", stderr(&out));
    }

    /// `apply PLAN EXTRA` through the case's provider.
    pub(crate) fn apply(&self, extra: &[&str]) -> Output {
        let mut args = vec!["apply", self.plan_path()];
        args.extend_from_slice(extra);
        self.exec(&args)
    }

    /// `apply PLAN` through the case's provider with extra environment.
    pub(crate) fn apply_with(&self, env: &[(&str, String)]) -> Output {
        let mut c = self.provider_cmd(&["apply", self.plan_path()]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// `lab show --format json`: the world behind both providers.
    pub(crate) fn show(&self) -> Value {
        let out = self.run(&["lab", "show", "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub(crate) fn vm(&self, name: &str) -> Value {
        self.show()["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    }

    /// `Get-VMSwitch | Select Name, ComputerName | ConvertTo-Json`, as an
    /// administrator would export it from the lab's hosts (written to a
    /// temporary name and renamed: a running apply may be reading it).
    pub(crate) fn export_inventory(&self) -> PathBuf {
        let world = self.show();
        let mut switches = Vec::new();
        for host in world["primary"]["hosts"].as_array().unwrap() {
            for s in host["vswitches"].as_array().unwrap() {
                switches.push(serde_json::json!({
                    "Name": s,
                    "ComputerName": host["name"].as_str().unwrap().to_uppercase(),
                }));
            }
        }
        let path = self.dir.path().join("inventory.json");
        let tmp = self.dir.path().join("inventory.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&switches).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// `plan --detailed-exitcode` through the case's provider must say:
    /// nothing to do.
    pub(crate) fn assert_converged(&self) {
        self.assert_converged_as(&format!("{:?}", self.provider));
    }

    /// [`Case::assert_converged`], naming `context` when it fails.
    pub(crate) fn assert_converged_as(&self, context: &str) {
        let out = self.exec(&[
            "plan",
            self.plan_path(),
            "--detailed-exitcode",
            "--format",
            "json",
        ]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{context}: plan is not empty: {json:#}\n{}",
            stderr(&out)
        );
        assert_eq!(json["converged"], true, "{context}");
    }

    /// The lab's own log, `events.jsonl`.
    pub(crate) fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.lab_dir().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The lab's own log: every power-on follows a verification of every
    /// disk of that VM against the digest recorded at shutdown.
    pub(crate) fn assert_no_unverified_boot(&self) {
        let events = self.events();
        let mut verified: std::collections::HashSet<(String, String)> = Default::default();
        let mut boots = 0;
        for e in &events {
            let vm = e["vm"].as_str().unwrap_or_default().to_owned();
            match e["event"].as_str() {
                Some("verified") => {
                    assert_eq!(
                        e["shutdownDigest"], e["primaryDigest"],
                        "a verification record with unequal digests: {e}"
                    );
                    verified.insert((vm, e["disk"].as_str().unwrap_or_default().to_owned()));
                }
                Some("power-on") => {
                    boots += 1;
                    for disk in e["disks"].as_array().unwrap() {
                        assert!(
                            verified.contains(&(vm.clone(), disk.as_str().unwrap().to_owned())),
                            "{vm} powered on without verifying {disk}"
                        );
                    }
                }
                _ => {}
            }
        }
        assert!(boots > 0 || events.is_empty(), "no power-on recorded");
    }

    /// Each primary disk of `vm` holds the bytes of its recovery disk.
    pub(crate) fn assert_primary_holds_recovery_bytes(&self, vm: &str) {
        let v = self.vm(vm);
        let (recovery, primary) = (disk_bytes(&v["recovery"]), disk_bytes(&v["primary"]));
        assert!(!primary.is_empty(), "{:?}: {vm} has no disk", self.provider);
        assert_eq!(recovery.len(), primary.len(), "{:?}: {vm}", self.provider);
        for (i, (r, p)) in recovery.iter().zip(&primary).enumerate() {
            assert!(
                r == p,
                "{:?}: disk {i} of {vm}: the primary differs from the recovery disk at shutdown",
                self.provider
            );
        }
    }
}

/// The binary, without anything the test run's environment could pass on.
pub(crate) fn failback() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_failback"));
    for var in INHERITED {
        c.env_remove(var);
    }
    c.stdin(Stdio::null());
    c
}

pub(crate) fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bytes of each disk of `holder["disks"]`, in order.
pub(crate) fn disk_bytes(holder: &Value) -> Vec<Vec<u8>> {
    holder["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let path = Path::new(d["path"].as_str().unwrap());
            std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// `failback lab serve` on 127.0.0.1:0; killed on drop.
pub(crate) struct Emulator {
    child: Child,
    pub(crate) url: String,
}

impl Emulator {
    pub(crate) fn start(lab: &Path) -> Emulator {
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
    pub(crate) fn calls(&self) -> Value {
        let (status, body) = http(&self.url, "GET", "/_emulator/calls", None, None);
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Protected-item reads answered so far: `list` and `get` counts.
    pub(crate) fn reads(&self) -> Value {
        let (status, body) = http(&self.url, "GET", "/_emulator/reads", None, None);
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
pub(crate) fn http(
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

/// The `.yaml` files of `dir` (relative to the package), sorted; none when
/// the directory does not exist.
pub(crate) fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// `text` in UTF-16, little- or big-endian, without a byte-order mark.
pub(crate) fn encode_utf16(text: &str, big_endian: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// `text` in UTF-32, little- or big-endian, without a byte-order mark.
pub(crate) fn encode_utf32(text: &str, big_endian: bool) -> Vec<u8> {
    text.chars()
        .flat_map(|c| {
            let u = u32::from(c);
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// `text` in each UTF-16 and UTF-32 byte order, with its byte-order mark:
/// (file-name slug, the encoding's name, the bytes).
pub(crate) fn with_boms(text: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "utf16-le",
            "UTF-16 LE",
            with_prefix(b"\xFF\xFE", encode_utf16(text, false)),
        ),
        (
            "utf16-be",
            "UTF-16 BE",
            with_prefix(b"\xFE\xFF", encode_utf16(text, true)),
        ),
        (
            "utf32-le",
            "UTF-32 LE",
            with_prefix(b"\xFF\xFE\x00\x00", encode_utf32(text, false)),
        ),
        (
            "utf32-be",
            "UTF-32 BE",
            with_prefix(b"\x00\x00\xFE\xFF", encode_utf32(text, true)),
        ),
    ]
}

/// `body` after `prefix` (a byte-order mark, say).
pub(crate) fn with_prefix(prefix: &[u8], body: Vec<u8>) -> Vec<u8> {
    let mut bytes = prefix.to_vec();
    bytes.extend(body);
    bytes
}

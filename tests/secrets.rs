//! Secrets canary (issue 4, docs/reliability.md): a plan references its
//! certificate by `env:` and by `file:`, and other plans paste it where it
//! must not be; the certificate is a random canary drawn for each run. Every
//! command a user runs on them (validate in every format, plan, apply, a
//! failing apply, status, lab init/show) runs at the most verbose level
//! (`-vvv`, `RUST_LOG=trace`, text and JSON logs). The canary must appear
//! in no stdout or stderr and no file the commands leave (world.json,
//! events.jsonl, journal.jsonl, run.lock, ...): not raw, not in part (any
//! 16 characters of it), not in hex (lower or upper case), not in base64
//! (standard or URL-safe, at any alignment).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Output;

use rand::Rng;

use crate::support::{Case, stderr};

/// A random canary shaped like a DER certificate in base64 (`MII...`), so
/// that the validator's secret detection sees it wherever it is pasted.
fn canary() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    let body: String = (0..77)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("MII{body}")
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Every form in which the canary must not appear. Base64 of a text that
/// holds the canary contains, for one of the three alignments `k`, the
/// encoding of the canary's bytes from `k` on, cut to whole 3-byte groups.
fn forbidden_forms(canary: &str) -> Vec<(String, String)> {
    let bytes = canary.as_bytes();
    let mut forms = vec![
        ("raw".to_owned(), canary.to_owned()),
        ("hex".to_owned(), hex(bytes, false)),
        ("HEX".to_owned(), hex(bytes, true)),
    ];
    for k in 0..3 {
        let whole = (bytes.len() - k) / 3 * 3;
        let part = &bytes[k..k + whole];
        forms.push((format!("base64@{k}"), base64(part, false)));
        forms.push((format!("base64url@{k}"), base64(part, true)));
    }
    // Any 16 characters of it: a truncated or excerpted canary is a leak too.
    for start in (3..canary.len() - 16).step_by(4) {
        forms.push((
            format!("part@{start}"),
            canary[start..start + 16].to_owned(),
        ));
    }
    forms
}

fn find_leak(haystack: &[u8], forms: &[(String, String)]) -> Option<String> {
    let text = String::from_utf8_lossy(haystack);
    forms
        .iter()
        .find(|(_, f)| text.contains(f.as_str()))
        .map(|(name, _)| name.clone())
}

fn assert_no_leak(what: &str, bytes: &[u8], forms: &[(String, String)]) {
    if let Some(form) = find_leak(bytes, forms) {
        panic!(
            "the canary leaked ({form}) in {what}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Every file under `dir`, except the inputs that hold the canary on purpose.
fn files(dir: &Path, inputs: &[PathBuf], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if inputs.iter().any(|i| path.starts_with(i)) {
            continue;
        }
        if path.is_dir() {
            files(&path, inputs, out);
        } else {
            out.push(path);
        }
    }
}

const PLAN_HEAD: &str = "\
apiVersion: failback/v1
kind: FailbackPlan
metadata:
  name: canary
spec:
  primary:
    site: dc1
    hosts:
      - name: hv-01
        vswitches: [Production]
  recovery:
    site: azure
  defaults:
    commit: auto
";

const PLAN_GROUPS: &str = "  groups:
    - name: app
      vms:
        - name: app-01
          host: hv-01
          networks: [{ vswitch: Production }]
          verify: { command: [\"true\"], timeout: 10s }
";

fn plan_with(encryption: &str) -> String {
    format!("{PLAN_HEAD}{encryption}{PLAN_GROUPS}")
}

/// The verbose settings every command runs with, in both log formats.
fn verbose_runs() -> [(&'static str, &'static [&'static str]); 2] {
    [
        (
            "text",
            &["-vvv", "--log-format", "text", "--color", "always"],
        ),
        ("json", &["-vvv", "--log-format", "json"]),
    ]
}

struct Runner<'a> {
    case: &'a Case,
    forms: Vec<(String, String)>,
    env: Vec<(String, String)>,
    commands: u32,
}

impl Runner<'_> {
    /// Runs a command verbosely in both log formats; checks both streams.
    fn run(&mut self, args: &[&str]) -> Vec<Output> {
        let mut outs = Vec::new();
        for (name, verbose) in verbose_runs() {
            let mut all = args.to_vec();
            all.extend_from_slice(verbose);
            let mut cmd = self.case.cmd(&all);
            cmd.env("RUST_LOG", "trace");
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            self.commands += 1;
            let what = format!("`failback {}` ({name} logs)", args.join(" "));
            assert_no_leak(&format!("the stdout of {what}"), &out.stdout, &self.forms);
            assert_no_leak(&format!("the stderr of {what}"), &out.stderr, &self.forms);
            outs.push(out);
        }
        outs
    }
}

#[test]
fn no_command_prints_or_stores_a_secret() {
    let secret = canary();
    let forms = forbidden_forms(&secret);
    let case = Case::new(&plan_with(
        "  encryption:\n    certificate: { env: FAILBACK_CANARY_CERT }\n",
    ));
    let dir = case.dir.path().to_path_buf();
    let inputs_dir = dir.join("inputs");
    std::fs::create_dir_all(inputs_dir.join("certs")).unwrap();
    std::fs::write(inputs_dir.join("certs/dr.pfx"), &secret).unwrap();
    let by_file = inputs_dir.join("by-file.yaml");
    std::fs::write(
        &by_file,
        plan_with("  encryption:\n    certificate: { file: certs/dr.pfx }\n"),
    )
    .unwrap();
    // Pasted where it must not be: as the certificate, as a PEM block, in
    // a label, in the reference fields, and in a document that does not parse.
    let pasted = [
        plan_with(&format!("  encryption:\n    certificate: \"{secret}\"\n")),
        plan_with(&format!(
            "  encryption:\n    certificate: |\n      -----BEGIN CERTIFICATE-----\n      {secret}\n      -----END CERTIFICATE-----\n"
        )),
        plan_with(&format!(
            "  encryption:\n    certificate: {{ env: \"{secret}\" }}\n"
        )),
        plan_with(&format!(
            "  encryption:\n    certificate: {{ file: \"{secret}\" }}\n"
        )),
        plan_with("").replace(
            "  name: canary\n",
            &format!("  name: canary\n  labels:\n    pfx: {secret}\n"),
        ),
        plan_with(&format!("  encryption:\n    certificate: [\"{secret}\"\n")),
        plan_with(&format!(
            "  encryption:\n    certificate:\n      pem: {secret}\n"
        )),
    ];
    let mut pasted_paths = Vec::new();
    for (i, text) in pasted.iter().enumerate() {
        let path = inputs_dir.join(format!("pasted-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        pasted_paths.push(path);
    }

    let mut r = Runner {
        case: &case,
        forms,
        env: vec![("FAILBACK_CANARY_CERT".to_owned(), secret.clone())],
        commands: 0,
    };
    let plan = case.plan_path().to_owned();
    let by_file = by_file.to_str().unwrap().to_owned();

    // Valid plans that reference the secret.
    for p in [&plan, &by_file] {
        for format in ["human", "json", "github"] {
            for out in r.run(&["validate", p, "--format", format]) {
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            }
        }
    }
    for out in r.run(&["lab", "init", &plan, "--disk-size", "64KiB", "--force"]) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    r.run(&["plan", &plan, "--format", "json"]);
    r.run(&["plan", &by_file]);
    // A failing apply: the primary site is disconnected.
    assert_eq!(
        case.run(&["lab", "fault", "disconnect"]).status.code(),
        Some(0)
    );
    for out in r.run(&["apply", &plan, "--format", "json"]) {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    for out in r.run(&["apply", &by_file]) {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_eq!(case.run(&["lab", "fault", "clear"]).status.code(), Some(0));
    // Successful applies (the second one finds nothing to do).
    for out in r.run(&["apply", &plan, "--format", "json"]) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    for out in r.run(&["apply", &by_file]) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    r.run(&["status", &plan, "--format", "json"]);
    r.run(&["status", &by_file]);
    r.run(&["lab", "show", "--format", "json"]);

    // Plans that paste it: refused (65), never echoed.
    for p in &pasted_paths {
        let p = p.to_str().unwrap();
        for format in ["human", "json", "github"] {
            for out in r.run(&["validate", p, "--format", format]) {
                assert_eq!(
                    out.status.code(),
                    Some(65),
                    "{p} is refused: {}",
                    stderr(&out)
                );
            }
        }
        for cmd in ["plan", "apply", "status"] {
            for out in r.run(&[cmd, p]) {
                assert_eq!(out.status.code(), Some(65), "{cmd} {p}: {}", stderr(&out));
            }
        }
    }
    // The inputs directory as a whole, as CI would validate it.
    r.run(&["validate", inputs_dir.to_str().unwrap(), "--format", "json"]);

    // Nothing the commands left behind holds it.
    let mut left = Vec::new();
    let mut inputs = pasted_paths.clone();
    inputs.push(case.plan.clone());
    inputs.push(inputs_dir.clone());
    files(&dir, &inputs, &mut left);
    for name in ["world.json", "events.jsonl", "journal.jsonl", "run.lock"] {
        assert!(
            left.iter()
                .any(|p| p.file_name().is_some_and(|n| n == name)),
            "{name} was not written: the scan would prove nothing"
        );
    }
    for path in &left {
        let bytes = std::fs::read(path).unwrap();
        assert_no_leak(&path.display().to_string(), &bytes, &r.forms);
    }
    println!(
        "secrets: {} command runs, {} files scanned, {} forms of the canary checked",
        r.commands,
        left.len(),
        r.forms.len()
    );
}

/// The scan itself works: a canary printed in any form is found.
#[test]
fn the_canary_scan_finds_every_form() {
    let secret = canary();
    let forms = forbidden_forms(&secret);
    let wrapped = format!("prefix {secret} suffix");
    for text in [
        wrapped.clone(),
        hex(wrapped.as_bytes(), false),
        hex(wrapped.as_bytes(), true),
        base64(wrapped.as_bytes(), false),
        base64(format!("x{wrapped}").as_bytes(), false),
        base64(format!("xy{wrapped}").as_bytes(), true),
        format!("{}…", &secret[..24]),
    ] {
        assert!(
            find_leak(text.as_bytes(), &forms).is_some(),
            "not found in {text}"
        );
    }
    assert!(find_leak(b"nothing here", &forms).is_none());
    assert_eq!(base64(b"Man", false), "TWFu");
    assert_eq!(base64(b"Ma", false), "TWE");
}

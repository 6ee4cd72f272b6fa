//! The validator's fixture corpus and the `validate` command line.
//!
//! `tests/fixtures/validate/valid/` holds plans that must pass without a
//! single diagnostic; `tests/fixtures/validate/invalid/` holds at least one
//! plan per diagnostic code, each named after the code it must produce
//! (`FB0203-unknown-vswitch.yaml`). Inputs that are binary or large (other
//! encodings, NUL bytes, a file over 4 MiB) are generated here instead of
//! committed, and join the invalid corpus under the same naming rule.
//!
//! Every fixture has one snapshot in `tests/snapshots/`: the human report
//! (no colour, 100 columns), the file's JSON object and, for valid plans, the
//! typed plan. Review a changed snapshot as the user-visible output it is,
//! then accept it with `INSTA_UPDATE=always cargo test` (or `cargo insta
//! review`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use failback::diagnostics::render::{self, HumanStyle};
use failback::diagnostics::{Code, FileReport};
use failback::plan::FailbackPlan;
use failback::validate::{self, Checked, MAX_PLAN_BYTES, Origin};
use serde_json::Value;

use crate::support::{encode_utf16, with_boms};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/validate");

/// One input of the corpus: the name it is reported under and its bytes.
struct Fixture {
    /// `valid/NAME.yaml` or `invalid/NAME.yaml`.
    name: String,
    bytes: Vec<u8>,
}

impl Fixture {
    fn file_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    /// The code an invalid fixture is named after.
    fn expected_code(&self) -> Code {
        let prefix = &self.file_name()[..6];
        *Code::ALL
            .iter()
            .find(|c| c.as_str() == prefix)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the name does not start with a known FBnnnn code",
                    self.name
                )
            })
    }
}

fn committed(kind: &str) -> Vec<Fixture> {
    let dir = Path::new(FIXTURES).join(kind);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| Fixture {
            name: format!("{kind}/{}", p.file_name().unwrap().to_string_lossy()),
            bytes: std::fs::read(&p).unwrap(),
        })
        .collect()
}

/// The smallest valid plan, the base of generated inputs.
pub fn minimal_plan() -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join("valid/minimal.yaml")).unwrap()
}

/// Invalid inputs that are not committed: binary, or larger than a plan
/// may be. Named like the committed ones.
fn generated() -> Vec<Fixture> {
    let plan = minimal_plan();
    let mut too_large = plan.clone().into_bytes();
    let filler = b"# padding: a comment line that makes the file larger than a plan may be\n";
    while too_large.len() <= MAX_PLAN_BYTES {
        too_large.extend_from_slice(filler);
    }
    let mut cases = vec![("FB0001-larger-than-4-mib.yaml".to_owned(), too_large)];
    for (slug, _, bytes) in with_boms(&plan) {
        cases.push((format!("FB0002-{slug}-bom.yaml"), bytes));
    }
    let others: Vec<(&str, Vec<u8>)> = vec![
        (
            "FB0002-utf16-le-without-bom.yaml",
            encode_utf16(&plan, false),
        ),
        (
            "FB0002-windows-1252.yaml",
            // `app-01` renamed `app-ü1` by an editor saving Windows-1252.
            plan.replace("name: app-01", "name: app-\u{FC}1")
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap())
                .collect(),
        ),
        (
            "FB0003-nul-byte.yaml",
            plan.replace("name: app-01", "name: app\u{0}01")
                .into_bytes(),
        ),
        (
            "FB0003-escape-sequence.yaml",
            plan.replace("site: azure", "site: azure\u{1B}[2K")
                .into_bytes(),
        ),
        (
            "FB0003-bidi-override.yaml",
            plan.replace("host: hv-01", "host: hv-01\u{202E}")
                .into_bytes(),
        ),
    ];
    cases.extend(
        others
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes)),
    );
    cases
        .into_iter()
        .map(|(name, bytes)| Fixture {
            name: format!("invalid/{name}"),
            bytes,
        })
        .collect()
}

fn invalid_fixtures() -> Vec<Fixture> {
    let mut all = committed("invalid");
    all.extend(generated());
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Runs the validator as `failback validate NAME` would on a named file.
fn check(fixture: &Fixture) -> (FileReport, Option<FailbackPlan>) {
    match validate::check(&fixture.name, &fixture.bytes, Origin::Named) {
        Checked::Plan(report, plan) => (*report, plan.map(|p| *p)),
        Checked::NotAPlan => panic!("{}: a named file is always a plan", fixture.name),
    }
}

/// What a user sees for one file, in every form, for one snapshot.
fn rendering(report: &FileReport, plan: Option<&FailbackPlan>) -> String {
    let mut out = String::new();
    out.push_str("---- human (stderr, then the summary line on stdout) ----\n");
    out.push_str(&render::human(report, HumanStyle::plain()));
    out.push_str(&render::summary_line(report, false));
    out.push_str("\n---- json (one entry of `files`) ----\n");
    out.push_str(&serde_json::to_string_pretty(&render::json_file(report, false)).unwrap());
    out.push_str("\n---- github ----\n");
    out.push_str(&render::github(report));
    if let Some(plan) = plan {
        out.push_str("---- the typed plan ----\n");
        out.push_str(&serde_json::to_string_pretty(plan).unwrap());
        out.push('\n');
    }
    out
}

fn snapshot_name(fixture: &Fixture) -> String {
    fixture.name.trim_end_matches(".yaml").replace('/', "-")
}

/// Asserts every snapshot, then fails once with the list of mismatches, so
/// that one run shows every changed rendering.
fn assert_snapshots(
    fixtures: &[Fixture],
    mut extra: impl FnMut(&Fixture, &FileReport, Option<&FailbackPlan>),
) {
    let mut failed = Vec::new();
    for fixture in fixtures {
        let (report, plan) = check(fixture);
        extra(fixture, &report, plan.as_ref());
        let text = rendering(&report, plan.as_ref());
        let name = snapshot_name(fixture);
        let result = std::panic::catch_unwind(|| {
            insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
                insta::assert_snapshot!(name.as_str(), text);
            });
        });
        if result.is_err() {
            failed.push(fixture.name.clone());
        }
    }
    assert!(failed.is_empty(), "snapshots differ for: {failed:#?}");
}

#[test]
fn valid_fixtures_pass_without_any_diagnostic() {
    let fixtures = committed("valid");
    assert!(
        fixtures.len() >= 8,
        "expected the valid corpus, found {}",
        fixtures.len()
    );
    assert_snapshots(&fixtures, |fixture, report, plan| {
        assert!(
            report.diagnostics.is_empty(),
            "{}: {:#?}",
            fixture.name,
            report.diagnostics
        );
        assert!(plan.is_some(), "{}: no typed plan", fixture.name);
    });
}

#[test]
fn invalid_fixtures_report_their_code_at_a_position() {
    let fixtures = invalid_fixtures();
    assert_snapshots(&fixtures, |fixture, report, plan| {
        let expected = fixture.expected_code();
        let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code.as_str()).collect();
        assert!(
            report.diagnostics.iter().any(|d| d.code == expected),
            "{}: expected {} among {codes:?}",
            fixture.name,
            expected.as_str()
        );
        for d in &report.diagnostics {
            let whole_file = matches!(
                d.code,
                Code::FileTooLarge | Code::NotUtf8 | Code::EmptyDocument
            );
            if !whole_file {
                assert!(
                    d.line.is_some() && d.column.is_some(),
                    "{}: {} has no position: {d:#?}",
                    fixture.name,
                    d.code.as_str()
                );
            }
            if let (Some(line), Some(column)) = (d.line, d.column) {
                assert!(line >= 1 && column >= 1, "{}: {d:#?}", fixture.name);
            }
            assert!(
                d.help.is_some(),
                "{}: {} has no help line",
                fixture.name,
                d.code.as_str()
            );
            assert!(!d.message.is_empty());
        }
        if expected.severity() == failback::diagnostics::Severity::Warning {
            // A warning fixture is otherwise valid: it proves the warning alone.
            assert_eq!(
                report.errors(),
                0,
                "{}: {:#?}",
                fixture.name,
                report.diagnostics
            );
            assert!(
                plan.is_some(),
                "{}: a plan with warnings only is usable",
                fixture.name
            );
        } else {
            assert!(!report.is_valid(false), "{}", fixture.name);
            assert!(
                plan.is_none(),
                "{}: an invalid plan must not be returned",
                fixture.name
            );
        }
    });
}

#[test]
fn every_code_has_an_invalid_fixture() {
    let mut reported = BTreeSet::new();
    for fixture in invalid_fixtures() {
        let (report, _) = check(&fixture);
        reported.extend(report.diagnostics.iter().map(|d| d.code));
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !reported.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes no invalid fixture produces (add tests/fixtures/validate/invalid/CODE-what.yaml): {missing:?}"
    );
}

#[test]
fn every_fixture_snapshot_has_its_fixture() {
    // A renamed or removed fixture leaves its snapshot behind; insta does
    // not notice.
    let mut known: BTreeSet<String> = committed("valid")
        .iter()
        .chain(invalid_fixtures().iter())
        .map(snapshot_name)
        .collect();
    known.extend([
        "help-failback".to_owned(),
        "help-failback-validate".to_owned(),
    ]);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots");
    let orphans: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".snap")?.to_owned();
            let ours = stem.starts_with("valid-")
                || stem.starts_with("invalid-")
                || stem.starts_with("help-");
            (ours && !known.contains(&stem)).then_some(name)
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "snapshots without a fixture (delete them): {orphans:?}"
    );
}

#[test]
fn positions_point_at_the_offending_node() {
    // The columns of the committed fixtures, read off the files: a change
    // of the position logic shows here first, with the reason.
    let cases: &[(&str, Code, u32, u32)] = &[
        // `vswitch: Prod` in a block mapping: the value.
        (
            "invalid/FB0203-unknown-vswitch.yaml",
            Code::UnknownVSwitch,
            24,
            24,
        ),
        // The flow form `[{ adapter: nic0, vswitch: Backup }]`: the value.
        (
            "invalid/FB0203-unknown-vswitch.yaml",
            Code::UnknownVSwitch,
            27,
            48,
        ),
        // An unknown key: the key itself.
        ("invalid/FB0301-unknown-keys.yaml", Code::UnknownKey, 9, 5),
        // A missing key: the key of the mapping that lacks it.
        ("invalid/FB0302-missing-keys.yaml", Code::MissingKey, 3, 1),
        // A missing key in a list item: the item.
        ("invalid/FB0302-missing-keys.yaml", Code::MissingKey, 8, 9),
        // The second of two duplicate keys.
        (
            "invalid/FB0102-duplicate-key-in-vm.yaml",
            Code::DuplicateKey,
            18,
            11,
        ),
        // The tab itself, not the text after it.
        (
            "invalid/FB0101-tab-indentation.yaml",
            Code::YamlSyntax,
            4,
            1,
        ),
        // The `---` that starts the second document.
        (
            "invalid/FB0104-two-documents.yaml",
            Code::MultipleDocuments,
            18,
            1,
        ),
        // The `encryption:` key of the section that is retired.
        (
            "invalid/FB0401-encryption-retired.yaml",
            Code::EncryptionRetired,
            13,
            3,
        ),
        // After a multi-byte character, columns count characters.
        (
            "invalid/FB0203-after-unicode.yaml",
            Code::UnknownVSwitch,
            19,
            53,
        ),
        // With a BOM and CRLF line ends, positions are those an editor shows.
        (
            "invalid/FB0203-bom-and-crlf.yaml",
            Code::UnknownVSwitch,
            18,
            33,
        ),
    ];
    let fixtures = invalid_fixtures();
    for (name, code, line, column) in cases {
        let fixture = fixtures
            .iter()
            .find(|f| f.name == *name)
            .unwrap_or_else(|| panic!("no fixture {name}"));
        let (report, _) = check(fixture);
        assert!(
            report
                .diagnostics
                .iter()
                .any(|d| d.code == *code && d.line == Some(*line) && d.column == Some(*column)),
            "{name}: expected {} at {line}:{column}, got {:#?}",
            code.as_str(),
            report
                .diagnostics
                .iter()
                .map(|d| (d.code.as_str(), d.line, d.column))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn yaml_1_2_strings_stay_strings() {
    let fixture = committed("valid")
        .into_iter()
        .find(|f| f.name == "valid/yaml-1.2-strings.yaml")
        .unwrap();
    let (_, plan) = check(&fixture);
    let plan = plan.unwrap();
    let vms: Vec<&str> = plan.vms().map(|(_, vm)| vm.name.as_str()).collect();
    assert_eq!(vms, ["no", "1:30"]);
    assert_eq!(plan.spec.primary.hosts[0].name.as_str(), "0755");
    assert_eq!(plan.spec.groups[0].name.as_str(), "on");
    assert_eq!(plan.metadata.labels["mode"], "0755");
}

// ---- the command line ----

fn failback() -> Command {
    let mut cmd = Command::cargo_bin("failback").unwrap();
    // Deterministic output: no colour, no inherited settings, a fixed width.
    let inherited = std::env::vars_os().map(|(name, _)| name).filter(|name| {
        let name = name.to_string_lossy();
        name.starts_with("FAILBACK_") || ["RUST_LOG", "CLICOLOR_FORCE"].contains(&name.as_ref())
    });
    for var in inherited {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").env("COLUMNS", "100");
    cmd
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn exit_0_for_valid_plans() {
    failback()
        .arg("validate")
        .arg(fixture_path("valid"))
        .assert()
        .code(0);
    failback()
        .arg("validate")
        .arg(fixture_path("valid/full.yaml"))
        .arg(fixture_path("valid/minimal.yaml"))
        .assert()
        .code(0);
}

#[test]
fn exit_65_for_an_invalid_plan() {
    failback()
        .arg("validate")
        .arg(fixture_path("invalid/FB0203-unknown-vswitch.yaml"))
        .assert()
        .code(65);
    // One invalid file among valid ones is enough.
    failback()
        .arg("validate")
        .arg(fixture_path("valid/minimal.yaml"))
        .arg(fixture_path("invalid/FB0202-unknown-host.yaml"))
        .assert()
        .code(65);
}

#[test]
fn exit_66_for_a_missing_path() {
    let output = failback()
        .arg("validate")
        .arg(fixture_path("no-such-plan.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(66));
    assert!(
        stderr_of(&output).contains("no-such-plan.yaml"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn exit_64_for_a_usage_error() {
    failback()
        .args(["validate", "--no-such-flag"])
        .assert()
        .code(64);
    failback()
        .args(["validate", "--format", "yaml"])
        .arg(fixture_path("valid"))
        .assert()
        .code(64);
}

#[test]
fn deny_warnings_turns_a_warning_only_plan_invalid() {
    let plan = fixture_path("invalid/FB0401-encryption-retired.yaml");
    failback().arg("validate").arg(&plan).assert().code(0);
    failback()
        .arg("validate")
        .arg("--deny-warnings")
        .arg(&plan)
        .assert()
        .code(65);
    let output = failback()
        .args(["validate", "--deny-warnings", "--format", "json"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(65));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["files"][0]["valid"], false);
    assert_eq!(json["files"][0]["warnings"], 1);
    assert_eq!(json["summary"]["invalid"], 1);
}

/// A directory as a repository holds it: plans among other YAML.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("plans/erp")).unwrap();
    std::fs::create_dir_all(root.join("k8s")).unwrap();
    std::fs::create_dir_all(root.join(".github/workflows")).unwrap();
    let plan = minimal_plan();
    std::fs::write(root.join("plans/web.yaml"), &plan).unwrap();
    std::fs::write(
        root.join("plans/erp/erp.yml"),
        plan.replace("name: minimal", "name: erp"),
    )
    .unwrap();
    std::fs::write(
        root.join("k8s/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
    )
    .unwrap();
    std::fs::write(root.join("k8s/broken.yaml"), "key: [unclosed\n").unwrap();
    std::fs::write(
        root.join("docker-compose.yml"),
        "services:\n  web:\n    image: nginx\n",
    )
    .unwrap();
    // Hidden directories are not walked, whatever they hold.
    std::fs::write(
        root.join(".github/workflows/plan.yaml"),
        "kind: FailbackPlan\n",
    )
    .unwrap();
    std::fs::write(root.join("README.md"), "kind: FailbackPlan\n").unwrap();
    dir
}

#[test]
fn directories_are_walked_and_other_yaml_is_skipped() {
    let repo = repository();
    let output = failback()
        .args(["validate", "--format", "json"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let files: Vec<String> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().replace('\\', "/"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].ends_with("plans/erp/erp.yml") && files[1].ends_with("plans/web.yaml"),
        "{files:?}"
    );
    assert_eq!(json["summary"]["files"], 2);
    assert_eq!(json["summary"]["valid"], 2);
    assert_eq!(json["summary"]["skipped"], 3, "{json:#}");
    assert_eq!(json["skipped"].as_array().unwrap().len(), 3);

    let output = failback()
        .arg("validate")
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout_of(&output)
            .contains("2 plan files checked: 2 valid, 0 invalid; 3 other YAML files skipped"),
        "{}",
        stdout_of(&output)
    );
}

#[test]
fn a_broken_plan_in_a_directory_is_reported_not_skipped() {
    let repo = repository();
    let plan = minimal_plan();
    let broken = [
        (
            "syntax.yaml",
            plan.replace("vswitches: [Production]", "vswitches: [Production")
                .into_bytes(),
        ),
        ("utf16.yaml", encode_utf16(&plan, false)),
        (
            "nul.yaml",
            plan.replace("app-01", "app\u{0}01").into_bytes(),
        ),
    ];
    for (name, bytes) in &broken {
        std::fs::write(repo.path().join("plans").join(name), bytes).unwrap();
    }
    let output = failback()
        .args(["validate", "--format", "json"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(65));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["summary"]["invalid"], 3, "{json:#}");
    assert_eq!(json["summary"]["skipped"], 3, "{json:#}");
}

#[test]
fn a_directory_without_plans_is_exit_66() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
    let output = failback().arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(66));
    assert!(
        stderr_of(&output).contains("no FailbackPlan files found"),
        "{}",
        stderr_of(&output)
    );

    let empty = tempfile::tempdir().unwrap();
    failback()
        .arg("validate")
        .arg(empty.path())
        .assert()
        .code(66);
}

#[test]
fn github_format_prints_workflow_commands() {
    let plan = fixture_path("invalid/FB0203-unknown-vswitch.yaml");
    let output = failback()
        .args(["validate", "--format", "github"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(65));
    let stdout = stdout_of(&output);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let file = plan
        .display()
        .to_string()
        .replace('%', "%25")
        .replace(':', "%3A")
        .replace(',', "%2C");
    assert!(
        lines[0].starts_with(&format!(
            "::error file={file},line=24,col=24,title=FB0203::vSwitch 'Prod' is not declared on host 'hv-01'%0Ahelp: "
        )),
        "{}",
        lines[0]
    );
    let shape = regex::Regex::new(
        r"^::(error|warning) file=[^,:]+,line=\d+,col=\d+,title=FB\d{4}::[^\n]+$",
    )
    .unwrap();
    for line in &lines {
        assert!(shape.is_match(line), "{line}");
    }

    let warning = fixture_path("invalid/FB0402-completion-ignored.yaml");
    let output = failback()
        .args(["validate", "--format", "github"])
        .arg(&warning)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout_of(&output).starts_with("::warning file="),
        "{}",
        stdout_of(&output)
    );
}

#[test]
fn json_goes_to_stdout_only_and_has_a_version() {
    for plan in ["valid/full.yaml", "invalid/FB0302-missing-keys.yaml"] {
        let output = failback()
            .args(["validate", "--format", "json"])
            .arg(fixture_path(plan))
            .output()
            .unwrap();
        assert!(output.stderr.is_empty(), "{plan}: {}", stderr_of(&output));
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["version"], 1);
        let file = &json["files"][0];
        for key in ["path", "valid", "diagnostics"] {
            assert!(file.get(key).is_some(), "{plan}: no {key}");
        }
        for d in file["diagnostics"].as_array().unwrap() {
            for key in [
                "code", "severity", "message", "line", "column", "pointer", "help",
            ] {
                assert!(
                    d.get(key).is_some(),
                    "{plan}: diagnostic without {key}: {d}"
                );
            }
        }
    }
}

#[test]
fn human_diagnostics_go_to_stderr_and_the_summary_to_stdout() {
    let output = failback()
        .arg("validate")
        .arg(fixture_path("invalid/FB0203-unknown-vswitch.yaml"))
        .output()
        .unwrap();
    let (stdout, stderr) = (stdout_of(&output), stderr_of(&output));
    assert!(
        stderr.contains("vSwitch 'Prod' is not declared on host 'hv-01'"),
        "{stderr}"
    );
    assert!(!stdout.contains("vSwitch 'Prod'"), "{stdout}");
    assert!(
        stdout.contains("FB0203-unknown-vswitch.yaml: invalid (2 errors, 0 warnings)"),
        "{stdout}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour with NO_COLOR: {stderr:?}"
    );
}

#[test]
fn help_is_stable() {
    let output = failback().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!("help-failback", stdout_of(&output));
    });
    let output = failback().args(["validate", "--help"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!("help-failback-validate", stdout_of(&output));
    });
}

use super::*;

pub(crate) const MINIMAL: &str = "\
apiVersion: failback/v1
kind: FailbackPlan
metadata:
  name: quick
spec:
  primary:
    site: dc1
    hosts:
      - name: hv-01
        vswitches: [Production]
  recovery:
    site: azure
  groups:
    - name: app
      vms:
        - name: app-01
          host: hv-01
          networks: [{ vswitch: Production }]
";

fn diags(src: &str) -> Vec<Diagnostic> {
    match check("t.yaml", src.as_bytes(), Origin::Named) {
        Checked::Plan(r, _) => r.diagnostics,
        Checked::NotAPlan => panic!("not a plan"),
    }
}

#[test]
fn minimal_plan_is_valid() {
    match check("t.yaml", MINIMAL.as_bytes(), Origin::Named) {
        Checked::Plan(r, Some(plan)) => {
            assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
            assert_eq!(plan.metadata.name.as_str(), "quick");
            assert_eq!(plan.spec.parallelism, 4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn yaml11_boolean_is_a_type_error_at_its_node() {
    let src = MINIMAL.replace(
        "          host: hv-01\n",
        "          host: hv-01\n          reverseReplicate: no\n",
    );
    let d = diags(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, Code::WrongType);
    assert_eq!((d[0].line, d[0].column), (Some(18), Some(29)));
    assert!(d[0].help.as_deref().unwrap_or("").contains("true or false"));
}

#[test]
fn all_problems_reported_in_one_run() {
    let src = MINIMAL
        .replace("vswitch: Production", "vswitch: Prod")
        .replace("    site: azure\n", "    site: azure\n    sitee: x\n")
        .replace("name: quick", "name: Quick_Plan");
    let d = diags(&src);
    let codes: Vec<&str> = d.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["FB0305", "FB0301", "FB0203"], "{d:#?}");
}

#[test]
fn the_clean_fast_path_takes_only_plans_without_any_diagnostic() {
    assert!(check_clean(MINIMAL).is_some());
    // A warning, an error, or a secret: the full check with positions runs.
    let warning = MINIMAL.replace(
        "  groups:\n",
        "  encryption:\n    certificate: { env: CERT }\n  groups:\n",
    );
    assert!(check_clean(&warning).is_none());
    match check("t.yaml", warning.as_bytes(), Origin::Named) {
        Checked::Plan(r, Some(_)) => assert_eq!(r.diagnostics[0].code, Code::EncryptionRetired),
        other => panic!("{other:?}"),
    }
    assert!(check_clean(&MINIMAL.replace("host: hv-01", "host: hv-09")).is_none());
    assert!(
        check_clean(&MINIMAL.replace(
            "name: quick",
            "name: quick\n  description: \"-----BEGIN CERTIFICATE-----\""
        ))
        .is_none()
    );
    assert!(check_clean("kind: Other\n").is_none());
}

/// The clean path's cheap questions answer as the full check's: a secret
/// exactly when `find` reports one, schema-clean exactly when the schema
/// check reports nothing. Over every fixture, valid and invalid.
#[test]
fn clean_path_shortcuts_agree_with_the_full_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate");
    let mut checked = 0;
    for sub in ["valid", "invalid"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(text) = input::decode(&bytes) else {
                continue;
            };
            let Ok(root) = parse(text) else { continue };
            let value = root.to_json(&mut String::new(), &mut Vec::new());
            assert_eq!(
                secrets::any(&value),
                !secrets::find(&value, &root).is_empty(),
                "{text}"
            );
            assert_eq!(
                schema_check::is_clean(&value),
                schema_check::check(&value, &|_| None).is_empty(),
                "{text}"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked}");
}

#[test]
fn tags_are_reported_on_the_fast_path_and_off_it() {
    // Plain text otherwise: the fast path sees the tag and hands over.
    let src = MINIMAL.replace("site: dc1", "site: !Ref dc1");
    assert!(check_clean(&src).is_none());
    let d = diags(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, Code::UnknownTag);
    assert_eq!((d[0].line, d[0].column), (Some(7), Some(16)));
    assert!(d[0].message.contains("`!Ref`"), "{}", d[0].message);
    // An anchor sends the clean check to serde-saphyr, whose `Value` drops
    // tags: a tag there must still reach the full check.
    let src = MINIMAL
        .replace("vswitches: [Production]", "vswitches: &sw [Production]")
        .replace("site: azure", "site: !!str azure");
    assert!(check_clean(&src).is_none());
    let d = diags(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, Code::RedundantTag);
    assert_eq!((d[0].line, d[0].column), (Some(12), Some(17)));
    // An exclamation mark in a string is no tag: still clean, on both paths.
    let src = MINIMAL.replace("name: quick", "name: quick\n  description: \"go!\"");
    assert!(check_clean(&src).is_some());
    let src = src.replace("vswitches: [Production]", "vswitches: &sw [Production]");
    assert!(diags(&src).is_empty());
}

//! Every example plan in `plans/` is valid, without warnings, and starts
//! with the schema modeline editors read.

#[test]
fn example_plans_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/plans");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/failback-plan.v1.json\n"),
            "{} lacks the schema modeline",
            path.display()
        );
        match failback::validate::check(
            &path.display().to_string(),
            text.as_bytes(),
            failback::validate::Origin::Named,
        ) {
            failback::validate::Checked::Plan(report, Some(_)) => {
                assert!(
                    report.diagnostics.is_empty(),
                    "{}: {:#?}",
                    path.display(),
                    report.diagnostics
                )
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    assert!(
        count >= 3,
        "expected at least three example plans, found {count}"
    );
}

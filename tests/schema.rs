//! The committed schema is exactly what the types generate.

#[test]
fn committed_schema_matches_the_types() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/failback-plan.v1.json"
    ))
    .expect("schemas/failback-plan.v1.json is committed");
    let generated = failback::plan::plan_schema_json();
    assert!(
        committed == generated,
        "schemas/failback-plan.v1.json is stale: run `cargo run -- schema > schemas/failback-plan.v1.json`"
    );
}

#[test]
fn schema_command_prints_the_schema() {
    let out = assert_cmd::Command::cargo_bin("failback")
        .unwrap()
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        failback::plan::plan_schema_json()
    );
}

#[test]
fn every_property_has_a_title_and_a_description() {
    let schema = failback::plan::plan_schema();
    let mut missing = Vec::new();
    walk(&schema, "#", &mut missing);
    assert!(
        missing.is_empty(),
        "properties without title/description: {missing:?}"
    );
}

fn walk(node: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            if prop.get("title").is_none() || prop.get("description").is_none() {
                missing.push(format!("{at}/properties/{name}"));
            }
        }
    }
    match node {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                walk(v, &format!("{at}/{k}"), missing);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{at}/{i}"), missing);
            }
        }
        _ => {}
    }
}

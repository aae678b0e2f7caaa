//! The JSON Schema shipped as `rules/rules.schema.json`: generated from the Rust types that
//! parse the rules, and valid for the shipped rules.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn shipped_schema() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("rules/rules.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn yaml_as_json(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn shipped_schema_is_the_generated_one() {
    let shipped = std::fs::read_to_string(root().join("rules/rules.schema.json")).unwrap();
    assert!(
        shipped == wxrules::rules::json_schema(),
        "rules/rules.schema.json is stale: run `cargo run -- schema > rules/rules.schema.json`"
    );
}

#[test]
fn shipped_rules_validate_against_the_shipped_schema() {
    let validator = jsonschema::validator_for(&shipped_schema()).unwrap();
    let rules = yaml_as_json("rules/rules.yaml");
    let errors: Vec<String> = validator
        .iter_errors(&rules)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn shipped_rules_point_editors_at_the_schema() {
    let text = std::fs::read_to_string(root().join("rules/rules.yaml")).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("# yaml-language-server: $schema=rules.schema.json")
    );
}

#[test]
fn the_schema_flags_what_the_loader_refuses() {
    let validator = jsonschema::validator_for(&shipped_schema()).unwrap();
    for (path, pointer) in [
        (
            "tests/data/rules/bad/unknown_key/rules.yaml",
            "/rules/0/when",
        ),
        ("tests/data/rules/bad/top_level/rules.yaml", ""),
    ] {
        let doc = yaml_as_json(path);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| e.instance_path().to_string())
            .collect();
        assert!(errors.iter().any(|p| p == pointer), "{path}: {errors:?}");
    }
    // A misspelt reply kind; news with 9 articles where 8 is the most.
    let news = |n: usize| {
        serde_json::json!({"rules": [{"name": "b", "reply": {
            "news": (0..n).map(|i| serde_json::json!({"title": i})).collect::<Vec<_>>()
        }}]})
    };
    assert!(validator.is_valid(&news(8)));
    assert!(!validator.is_valid(&news(9)));
    assert!(!validator.is_valid(&news(0)));
    let typo = serde_json::json!({"rules": [{"name": "a", "reply": {"txt": "hi"}}]});
    let errors: Vec<String> = validator
        .iter_errors(&typo)
        .map(|e| e.instance_path().to_string())
        .collect();
    assert_eq!(errors, ["/rules/0/reply"]);
}

//! The Helm chart (helm/kelp): its values stay in step with src/config.rs, and it renders,
//! lints and validates against the Kubernetes schemas (tests/helm/render_and_validate.py,
//! offline, through helm-python-sdk and kubernetes-validate from scripts/install-deps.sh).
//! The script also runs the `kelp webhook` binary with the chart's own certificate and
//! sidecar file and validates the pod it patches.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

/// Every `KELP_*` name declared in src/config.rs, read from its source so a new setting
/// cannot be forgotten here.
fn declared_settings() -> Vec<String> {
    include_str!("../src/config.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("pub const ENV_"))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

/// The values.yaml key of a setting: `KELP_WEBHOOK_X_Y` → `webhook.config.xY`,
/// `KELP_X_Y` → `config.xY`.
fn values_key(env: &str) -> (&'static str, String) {
    let (section, rest) = match env.strip_prefix("KELP_WEBHOOK_") {
        Some(rest) => ("webhook.config", rest),
        None => ("config", env.strip_prefix("KELP_").expect("every setting starts with KELP_")),
    };
    let mut key = String::new();
    for (i, word) in rest.split('_').enumerate() {
        let word = word.to_ascii_lowercase();
        if i == 0 {
            key.push_str(&word);
        } else {
            let mut chars = word.chars();
            key.extend(chars.next().map(|c| c.to_ascii_uppercase()));
            key.push_str(chars.as_str());
        }
    }
    (section, key)
}

fn keys_of(values: &Value, section: &str) -> BTreeSet<String> {
    let mut node = values;
    for part in section.split('.') {
        node = node.get(part).unwrap_or_else(|| panic!("values.yaml has no {section}"));
    }
    node.as_mapping()
        .unwrap_or_else(|| panic!("{section} is not a map"))
        .keys()
        .map(|k| k.as_str().expect("string keys").to_string())
        .collect()
}

#[test]
fn values_yaml_has_exactly_one_key_per_setting() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/kelp/values.yaml");
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).expect("values.yaml parses");
    let settings = declared_settings();
    assert!(settings.len() >= 20, "found {settings:?}");

    for section in ["config", "webhook.config"] {
        let expected: BTreeSet<String> = settings
            .iter()
            .map(|e| values_key(e))
            .filter(|(s, _)| *s == section)
            .map(|(_, k)| k)
            .collect();
        let present = keys_of(&values, section);
        let missing: Vec<_> = expected.difference(&present).collect();
        let unknown: Vec<_> = present.difference(&expected).collect();
        assert!(
            missing.is_empty(),
            "settings without a key under {section} in values.yaml: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "keys under {section} in values.yaml that are no KELP_* setting: {unknown:?}"
        );
    }
}

#[test]
fn values_key_naming_scheme() {
    assert_eq!(values_key("KELP_LISTEN"), ("config", "listen".to_string()));
    assert_eq!(values_key("KELP_MAX_FRAME_BYTES"), ("config", "maxFrameBytes".to_string()));
    assert_eq!(values_key("KELP_WEBHOOK_TLS_CERT"), ("webhook.config", "tlsCert".to_string()));
}

#[test]
fn chart_renders_lints_and_validates_against_kubernetes_schemas() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("python3")
        .arg(Path::new(root).join("tests/helm/render_and_validate.py"))
        .current_dir(root)
        // One scenario runs `kelp webhook` with the chart's rendered Secret and ConfigMap.
        .env("KELP_BIN", env!("CARGO_BIN_EXE_kelp"))
        .output()
        .expect("python3 runs (scripts/install-deps.sh installs what the chart test needs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "render_and_validate.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
}

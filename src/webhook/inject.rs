//! The mutation itself: an AdmissionReview request in, an AdmissionReview response with a
//! JSON Patch (RFC 6902) out. Pure: no I/O, no clock, no tokio. The HTTPS server in
//! `webhook.rs` only moves bytes in and out of [`review`].
//!
//! The rules, in the order they are applied:
//! 1. Anything but the CREATE of a Pod is allowed untouched.
//! 2. A pod is injected only when it opts in: annotation (or label) `kelp.io/inject: "true"`.
//! 3. Never twice: a pod with a container or init container named `kelp`, or with the
//!    `kelp.io/injected` annotation, is allowed untouched.
//! 4. Never into the node's network: a pod with `hostNetwork: true` is refused kelp (allowed
//!    without it, with a warning). kelp's listeners would open on the node: the Kafka port on
//!    the node's loopback, shared with every other host-network pod and process there (and
//!    clashing with a second such pod), the admin and peer ports on the node's addresses.
//! 5. Each application container (`spec.containers`) that does not set the bootstrap variable
//!    gets it; kelp is added as a native sidecar (first init container, `restartPolicy:
//!    Always`) or as the last plain container; its volumes are added; the pod's
//!    `terminationGracePeriodSeconds` is raised if it is shorter than kelp's drain needs; the
//!    pod is marked with the annotation `kelp.io/injected: "true"` and the label
//!    `kelp.io/sidecar: "true"` (what the chart's NetworkPolicy selects kelp pods by).
//!
//! Errors never block a pod: a review that cannot be understood, or an opted-in pod that
//! cannot be patched, is answered `allowed: true` without a patch and with a warning (which
//! `kubectl` prints). The chart also sets `failurePolicy: Ignore`, so a webhook that is down
//! or slow does not stop pods either. The price is that such a pod runs without kelp; the
//! missing `kelp.io/injected` annotation shows it.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::config::{Config, ENV_SHUTDOWN_GRACE_MS, NativeSidecar, WebhookConfig};

/// Annotation (or label) by which a pod asks for kelp. Only the value `"true"` (any case)
/// opts in. The label form lets a cluster restrict which pods the API server sends to the
/// webhook at all (the chart's `webhook.objectSelector`).
pub const INJECT_ANNOTATION: &str = "kelp.io/inject";
/// Annotation the webhook puts on every pod it injected.
pub const INJECTED_ANNOTATION: &str = "kelp.io/injected";
/// Label the webhook puts on every pod it injected: NetworkPolicies (the chart's) select the
/// pods that run kelp by it, since a selector cannot see annotations or containers. Pods
/// written by hand carry it through the chart's `kelp.podLabels` template.
pub const SIDECAR_LABEL: &str = "kelp.io/sidecar";
/// Why a host-network pod gets no kelp (the warning `kubectl` prints).
pub const HOST_NETWORK_REFUSAL: &str = "the pod uses hostNetwork, and kelp's listeners would \
    open in the node's network: its Kafka port on the node's loopback, shared with every other \
    host-network pod and process on the node, and its admin and peer ports on the node's \
    addresses; run the application without hostNetwork to get kelp";
/// The injected container's name; a pod with a container of this name is never injected.
pub const CONTAINER_NAME: &str = "kelp";
/// First Kubernetes 1.x minor version on which native sidecars (the SidecarContainers feature
/// gate, beta and on by default since 1.29) can be relied on.
pub const NATIVE_SIDECAR_MIN_MINOR: u64 = 29;
/// What Kubernetes uses when a pod sets no `terminationGracePeriodSeconds`.
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;
/// Time kelp needs beyond its own drain to flush and exit after SIGTERM.
const EXIT_MARGIN_SECONDS: i64 = 5;

/// Everything [`mutate`] needs besides the review itself.
#[derive(Debug, Clone)]
pub struct InjectSettings {
    /// The kelp container spec (a JSON object whose `name` is `kelp`).
    pub container: Value,
    /// Volumes the container mounts; added to the pod (an existing volume of the same name
    /// makes injection fail rather than mount someone else's volume).
    pub volumes: Vec<Value>,
    /// Add kelp as an init container with `restartPolicy: Always` (Kubernetes ≥ 1.29).
    pub native_sidecar: bool,
    /// Name of the variable set on application containers.
    pub bootstrap_env: String,
    /// Its value.
    pub bootstrap_servers: String,
    /// The shortest `terminationGracePeriodSeconds` an injected pod may have.
    pub min_grace_seconds: i64,
}

impl InjectSettings {
    /// Settings from a sidecar file's text (`{"container": {...}, "volumes": [...]}`) and the
    /// bootstrap variable. The minimum grace period follows the container's
    /// `KELP_SHUTDOWN_GRACE_MS` (or kelp's default) plus a margin.
    pub fn from_sidecar_json(
        text: &str,
        native_sidecar: bool,
        bootstrap_env: &str,
        bootstrap_servers: &str,
    ) -> Result<InjectSettings, String> {
        let file: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let container = file.get("container").cloned().ok_or("no \"container\" key")?;
        let object = container.as_object().ok_or("\"container\" is not an object")?;
        match object.get("name").and_then(Value::as_str) {
            Some(CONTAINER_NAME) => {}
            other => {
                return Err(format!(
                    "the container must be named {CONTAINER_NAME:?}, not {other:?}"
                ));
            }
        }
        let volumes = match file.get("volumes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(v)) => v.clone(),
            Some(_) => return Err("\"volumes\" is not a list".into()),
        };
        for v in &volumes {
            if v.get("name").and_then(Value::as_str).is_none() {
                return Err(format!("a volume has no name: {v}"));
            }
        }
        if bootstrap_env.is_empty() {
            return Err("the bootstrap variable name is empty".into());
        }
        let grace_ms = container_env(&container, ENV_SHUTDOWN_GRACE_MS)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{ENV_SHUTDOWN_GRACE_MS}={v:?} is not a number"))
            })
            .transpose()?
            .unwrap_or_else(Config::default_shutdown_grace_ms);
        let grace_seconds =
            i64::try_from(grace_ms.div_ceil(1000)).map_err(|_| "grace period too large")?;
        Ok(InjectSettings {
            container,
            volumes,
            native_sidecar,
            bootstrap_env: bootstrap_env.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            min_grace_seconds: grace_seconds + EXIT_MARGIN_SECONDS,
        })
    }

    /// Settings for `kelp webhook`: reads the sidecar file and decides native vs plain.
    pub fn from_config(config: &WebhookConfig) -> anyhow::Result<InjectSettings> {
        use anyhow::Context;
        let text = std::fs::read_to_string(&config.sidecar_file).with_context(|| {
            format!(
                "reading {} ({})",
                config.sidecar_file.display(),
                crate::config::ENV_WEBHOOK_SIDECAR_FILE
            )
        })?;
        let native = native_sidecar(config.native_sidecar, config.kube_version.as_deref())?;
        InjectSettings::from_sidecar_json(
            &text,
            native,
            &config.bootstrap_env,
            &config.bootstrap_servers,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{} ({}): {e}",
                config.sidecar_file.display(),
                crate::config::ENV_WEBHOOK_SIDECAR_FILE
            )
        })
    }
}

/// Whether to inject a native sidecar. `auto` is native from Kubernetes 1.29 on and plain when
/// the version is unknown; a version that cannot be read is an error, not a guess.
pub fn native_sidecar(setting: NativeSidecar, kube_version: Option<&str>) -> anyhow::Result<bool> {
    match (setting, kube_version.map(str::trim).filter(|v| !v.is_empty())) {
        (NativeSidecar::Enabled, _) => Ok(true),
        (NativeSidecar::Disabled, _) => Ok(false),
        (NativeSidecar::Auto, None) => Ok(false),
        (NativeSidecar::Auto, Some(v)) => {
            let (major, minor) = parse_kube_version(v).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: cannot read a Kubernetes version from {v:?}",
                    crate::config::ENV_WEBHOOK_KUBE_VERSION
                )
            })?;
            Ok(major > 1 || (major == 1 && minor >= NATIVE_SIDECAR_MIN_MINOR))
        }
    }
}

/// `(major, minor)` of a Kubernetes version as clusters report it: `v1.29.4`,
/// `v1.29.4-eks-036c24b`, `1.30.0+k3s1`, or a GKE-style minor `1.28+`.
pub fn parse_kube_version(v: &str) -> Option<(u64, u64)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_part = parts.next()?;
    let digits: String = minor_part.chars().take_while(char::is_ascii_digit).collect();
    let minor = digits.parse().ok()?;
    Some((major, minor))
}

/// What happened to one review; the server logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// kelp was added (natively or as a plain container).
    Injected { native: bool },
    /// The pod was left alone for the given reason (not a pod CREATE, not opted in, already injected).
    Skipped(&'static str),
    /// The pod opted in but must not get kelp (see the module docs); it was allowed without
    /// kelp and with a warning giving the reason.
    Refused(&'static str),
    /// The review or the pod could not be handled; it was allowed with a warning.
    Failed(String),
}

/// The AdmissionReview response for `review`. Never fails: see the module docs.
pub fn mutate(review: &Value, settings: &InjectSettings) -> Value {
    self::review(review, settings).0
}

/// [`mutate`], also telling what was decided.
pub fn review(review: &Value, settings: &InjectSettings) -> (Value, Outcome) {
    let uid = review.pointer("/request/uid").and_then(Value::as_str).unwrap_or("");
    // The response must carry the request's apiVersion; only v1 is registered by the chart.
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| v.starts_with("admission.k8s.io/"))
        .unwrap_or("admission.k8s.io/v1");
    let outcome = decide(review, settings);
    let mut response = json!({ "uid": uid, "allowed": true });
    match &outcome {
        Ok(Decision::Skip(_)) => {}
        Ok(Decision::Refuse(why)) => {
            response["warnings"] = json!([format!("kelp was not injected: {why}")]);
        }
        Ok(Decision::Patch { ops, .. }) => {
            let patch = serde_json::to_vec(ops).expect("a JSON value always serializes");
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
        }
        Err(why) => {
            response["warnings"] = json!([format!("kelp was not injected: {why}")]);
        }
    }
    let outcome = match outcome {
        Ok(Decision::Skip(reason)) => Outcome::Skipped(reason),
        Ok(Decision::Refuse(why)) => Outcome::Refused(why),
        Ok(Decision::Patch { native, .. }) => Outcome::Injected { native },
        Err(why) => Outcome::Failed(why),
    };
    (json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response }), outcome)
}

enum Decision {
    Skip(&'static str),
    Refuse(&'static str),
    Patch { ops: Vec<Value>, native: bool },
}

fn decide(review: &Value, settings: &InjectSettings) -> Result<Decision, String> {
    if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err("the request is not an AdmissionReview".into());
    }
    let request = review
        .get("request")
        .and_then(Value::as_object)
        .ok_or("the AdmissionReview has no request")?;
    if request.get("uid").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("the AdmissionReview request has no uid".into());
    }
    let is_pod = request.get("kind").and_then(|k| k.get("kind")).and_then(Value::as_str)
        == Some("Pod")
        && request
            .get("kind")
            .and_then(|k| k.get("group"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
    let sub_resource = request.get("subResource").and_then(Value::as_str).unwrap_or("");
    if !is_pod
        || !sub_resource.is_empty()
        || request.get("operation").and_then(Value::as_str) != Some("CREATE")
    {
        return Ok(Decision::Skip("not a pod creation"));
    }
    let pod =
        request.get("object").and_then(Value::as_object).ok_or("the request has no pod object")?;
    let metadata = match pod.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err("metadata is not an object".into()),
    };
    if !opted_in(metadata) {
        return Ok(Decision::Skip("not opted in"));
    }
    let annotations = string_map(metadata, "annotations")?;
    let spec = pod.get("spec").and_then(Value::as_object).ok_or("the pod has no spec")?;
    let containers = list(spec, "containers")?;
    let init_containers = list(spec, "initContainers")?;
    let has_kelp = containers
        .iter()
        .chain(init_containers)
        .any(|c| c.get("name").and_then(Value::as_str) == Some(CONTAINER_NAME));
    if has_kelp || annotations.is_some_and(|a| a.contains_key(INJECTED_ANNOTATION)) {
        return Ok(Decision::Skip("already injected"));
    }
    match spec.get("hostNetwork") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return Ok(Decision::Refuse(HOST_NETWORK_REFUSAL)),
        Some(_) => return Err("spec.hostNetwork is not a boolean".into()),
    }

    let mut ops = Vec::new();

    // The application's containers learn where kelp listens, unless they already say.
    let bootstrap = json!({ "name": settings.bootstrap_env, "value": settings.bootstrap_servers });
    for (i, container) in containers.iter().enumerate() {
        let container = container
            .as_object()
            .ok_or_else(|| format!("spec.containers[{i}] is not an object"))?;
        match container.get("env") {
            None | Some(Value::Null) => {
                ops.push(add(format!("/spec/containers/{i}/env"), json!([bootstrap])))
            }
            Some(Value::Array(env)) => {
                if !env.iter().any(|e| {
                    e.get("name").and_then(Value::as_str) == Some(settings.bootstrap_env.as_str())
                }) {
                    ops.push(add(format!("/spec/containers/{i}/env/-"), bootstrap.clone()));
                }
            }
            Some(_) => return Err(format!("spec.containers[{i}].env is not a list")),
        }
    }

    // kelp itself. A native sidecar goes first so that later init containers can use Kafka;
    // a plain container goes last so that `kubectl logs` and `exec` still default to the app.
    let mut container = settings.container.clone();
    if settings.native_sidecar {
        container["restartPolicy"] = json!("Always");
        ops.push(match spec.get("initContainers") {
            Some(Value::Array(_)) => add("/spec/initContainers/0".into(), container),
            _ => add("/spec/initContainers".into(), json!([container])),
        });
    } else {
        ops.push(match spec.get("containers") {
            Some(Value::Array(_)) => add("/spec/containers/-".into(), container),
            _ => add("/spec/containers".into(), json!([container])),
        });
    }

    // Its volumes (the quotas ConfigMap, when configured).
    if !settings.volumes.is_empty() {
        let existing = list(spec, "volumes")?;
        for v in &settings.volumes {
            let name = v.get("name").and_then(Value::as_str);
            if existing.iter().any(|e| e.get("name").and_then(Value::as_str) == name) {
                return Err(format!(
                    "the pod already has a volume named {:?}",
                    name.unwrap_or_default()
                ));
            }
        }
        if matches!(spec.get("volumes"), Some(Value::Array(_))) {
            ops.extend(settings.volumes.iter().map(|v| add("/spec/volumes/-".into(), v.clone())));
        } else {
            ops.push(add("/spec/volumes".into(), Value::Array(settings.volumes.clone())));
        }
    }

    // Room to drain: on SIGTERM kelp finishes in-flight requests for up to its grace period.
    let grace = match spec.get("terminationGracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or("spec.terminationGracePeriodSeconds is not an integer")?),
    };
    if grace.unwrap_or(DEFAULT_POD_GRACE_SECONDS) < settings.min_grace_seconds {
        let op = if grace.is_some() { "replace" } else { "add" };
        ops.push(json!({ "op": op, "path": "/spec/terminationGracePeriodSeconds", "value": settings.min_grace_seconds }));
    }

    // The marks: the annotation makes a second pass (or a re-invocation) a no-op; the label
    // lets a NetworkPolicy select the pods that run kelp.
    let labels = string_map(metadata, "labels")?;
    match metadata {
        None => ops.push(add(
            "/metadata".into(),
            json!({
                "annotations": { INJECTED_ANNOTATION: "true" },
                "labels": { SIDECAR_LABEL: "true" },
            }),
        )),
        Some(_) => {
            ops.push(mark(annotations.is_some(), "annotations", INJECTED_ANNOTATION));
            ops.push(mark(labels.is_some(), "labels", SIDECAR_LABEL));
        }
    }

    Ok(Decision::Patch { ops, native: settings.native_sidecar })
}

/// The annotation wins over the label when both are present.
fn opted_in(metadata: Option<&Map<String, Value>>) -> bool {
    let value = |field: &str| {
        metadata
            .and_then(|m| m.get(field))
            .and_then(|m| m.get(INJECT_ANNOTATION))
            .and_then(Value::as_str)
    };
    value("annotations").or_else(|| value("labels")).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn string_map<'a>(
    metadata: Option<&'a Map<String, Value>>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match metadata.and_then(|m| m.get(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("metadata.{field} is not an object")),
    }
}

/// A list field of the pod spec; absent and `null` read as empty.
fn list<'a>(spec: &'a Map<String, Value>, field: &str) -> Result<&'a [Value], String> {
    match spec.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("spec.{field} is not a list")),
    }
}

/// Set `key: "true"` in `metadata.<field>`, adding the map when the pod has none.
fn mark(has_map: bool, field: &str, key: &str) -> Value {
    if has_map {
        add(format!("/metadata/{field}/{}", escape_pointer(key)), json!("true"))
    } else {
        add(format!("/metadata/{field}"), json!({ key: "true" }))
    }
}

fn add(path: String, value: Value) -> Value {
    json!({ "op": "add", "path": path, "value": value })
}

/// One JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The literal `value` of the container's variable `name`, if it sets one.
fn container_env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_versions_as_clusters_report_them() {
        assert_eq!(parse_kube_version("v1.29.4"), Some((1, 29)));
        assert_eq!(parse_kube_version("v1.29.4-eks-036c24b"), Some((1, 29)));
        assert_eq!(parse_kube_version("1.30.0+k3s1"), Some((1, 30)));
        assert_eq!(parse_kube_version("1.28+"), Some((1, 28)));
        assert_eq!(parse_kube_version("v1"), None);
        assert_eq!(parse_kube_version("latest"), None);
    }

    #[test]
    fn auto_is_native_from_1_29_and_plain_when_unknown() {
        assert!(!native_sidecar(NativeSidecar::Auto, Some("v1.28.9")).unwrap());
        assert!(native_sidecar(NativeSidecar::Auto, Some("v1.29.0")).unwrap());
        assert!(native_sidecar(NativeSidecar::Auto, Some("v1.36.1-gke.100")).unwrap());
        assert!(!native_sidecar(NativeSidecar::Auto, None).unwrap());
        assert!(!native_sidecar(NativeSidecar::Auto, Some("")).unwrap());
        assert!(native_sidecar(NativeSidecar::Enabled, Some("v1.27.0")).unwrap());
        assert!(!native_sidecar(NativeSidecar::Disabled, Some("v1.30.0")).unwrap());
        let err = native_sidecar(NativeSidecar::Auto, Some("banana")).unwrap_err().to_string();
        assert!(err.contains("KELP_WEBHOOK_KUBE_VERSION"), "{err}");
    }

    #[test]
    fn webhook_flags_parse_and_name_a_bad_value() {
        let c = WebhookConfig::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.native_sidecar, NativeSidecar::Auto);
        assert_eq!(c.bootstrap_env, "KAFKA_BOOTSTRAP_SERVERS");
        assert_eq!(c.bootstrap_servers, "127.0.0.1:9092");
        let forced =
            WebhookConfig::from_args(["--native-sidecar", "true", "--kube-version", "v1.27.1"])
                .unwrap();
        assert_eq!(forced.native_sidecar, NativeSidecar::Enabled);
        let err = WebhookConfig::from_args(["--native-sidecar", "maybe"]).unwrap_err().to_string();
        assert!(err.contains("--native-sidecar"), "{err}");
    }

    #[test]
    fn pointer_tokens_escape_slash_and_tilde() {
        assert_eq!(escape_pointer("kelp.io/injected"), "kelp.io~1injected");
        assert_eq!(escape_pointer("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn grace_follows_the_sidecars_setting_or_kelps_default() {
        let default =
            InjectSettings::from_sidecar_json(r#"{"container":{"name":"kelp"}}"#, false, "K", "v")
                .unwrap();
        let expected = i64::try_from(Config::default_shutdown_grace_ms().div_ceil(1000)).unwrap()
            + EXIT_MARGIN_SECONDS;
        assert_eq!(default.min_grace_seconds, expected);
        let custom = r#"{"container":{"name":"kelp","env":[{"name":"KELP_SHUTDOWN_GRACE_MS","value":"60500"}]}}"#;
        assert_eq!(
            InjectSettings::from_sidecar_json(custom, false, "K", "v").unwrap().min_grace_seconds,
            61 + EXIT_MARGIN_SECONDS
        );
    }

    #[test]
    fn a_sidecar_file_must_name_its_container_kelp() {
        let err =
            InjectSettings::from_sidecar_json(r#"{"container":{"name":"other"}}"#, false, "K", "v")
                .unwrap_err();
        assert!(err.contains("kelp"), "{err}");
        assert!(InjectSettings::from_sidecar_json("[]", false, "K", "v").is_err());
        assert!(
            InjectSettings::from_sidecar_json(
                r#"{"container":{"name":"kelp"},"volumes":[{}]}"#,
                false,
                "K",
                "v"
            )
            .is_err()
        );
    }
}

//! The admission webhook: exact JSON Patch operations for real AdmissionReview requests, the
//! patches applied back to the pod (so a second review sees an injected pod), and one run of
//! the `kelp webhook` binary over TLS.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use kelp::config::NativeSidecar;
use kelp::webhook::{InjectSettings, Outcome, mutate, native_sidecar, review};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

// === fixtures ===

/// What the chart's sidecar ConfigMap holds, trimmed to what the assertions need.
fn sidecar_file(volumes: Value) -> String {
    json!({
        "container": {
            "name": "kelp",
            "image": "kelp:0.1.0",
            "args": ["serve"],
            "env": [{ "name": "KELP_MASTER", "value": "seaweedfs-master.seaweedfs:9333" }],
            "ports": [{ "name": "kafka", "containerPort": 9092 }, { "name": "admin", "containerPort": 9644 }],
        },
        "volumes": volumes,
    })
    .to_string()
}

fn settings_for(kube_version: &str) -> InjectSettings {
    let native = native_sidecar(NativeSidecar::Auto, Some(kube_version)).expect("a valid version");
    InjectSettings::from_sidecar_json(
        &sidecar_file(json!([])),
        native,
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
    )
    .unwrap()
}

/// The sidecar container as the webhook adds it.
fn kelp_container(native: bool) -> Value {
    let mut c =
        serde_json::from_str::<Value>(&sidecar_file(json!([]))).unwrap()["container"].clone();
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

/// The label op on a pod that has labels already (every fixture pod does).
fn sidecar_label() -> Value {
    json!({ "op": "add", "path": "/metadata/labels/kelp.io~1sidecar", "value": "true" })
}

fn bootstrap() -> Value {
    json!({ "name": "KAFKA_BOOTSTRAP_SERVERS", "value": "127.0.0.1:9092" })
}

/// An AdmissionReview as the API server sends it for a pod created by a ReplicaSet.
fn admission_review(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"] },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" }
        }
    })
}

fn app_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "orders-7d4b9c-",
            "namespace": "shop",
            "labels": { "app": "orders" },
            "annotations": { "kelp.io/inject": "true" }
        },
        "spec": {
            "initContainers": [{ "name": "migrate", "image": "orders:1.4", "args": ["migrate"] }],
            "containers": [{
                "name": "orders",
                "image": "orders:1.4",
                "env": [{ "name": "LOG_LEVEL", "value": "info" }]
            }]
        }
    })
}

/// The JSON Patch of a response, checking the envelope on the way.
fn patch_of(response: &Value) -> Vec<Value> {
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    let r = &response["response"];
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch", "{response}");
    assert!(r.get("warnings").is_none(), "{response}");
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_untouched(response: &Value) {
    let r = &response["response"];
    assert_eq!(r["allowed"], true, "{response}");
    assert!(r.get("patch").is_none() && r.get("patchType").is_none(), "{response}");
    assert!(r.get("warnings").is_none(), "{response}");
}

fn assert_allowed_with_warning(response: &Value) -> String {
    let r = &response["response"];
    assert_eq!(r["allowed"], true, "{response}");
    assert!(r.get("patch").is_none(), "{response}");
    let warnings = r["warnings"].as_array().expect("a warning");
    assert_eq!(warnings.len(), 1);
    warnings[0].as_str().unwrap().to_string()
}

/// Apply `add`/`replace` operations (all the webhook emits) the way the API server does.
fn apply(mut doc: Value, ops: &[Value]) -> Value {
    for op in ops {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).unwrap_or_else(|| panic!("no parent for {path}"));
        let value = op["value"].clone();
        match (op["op"].as_str().unwrap(), target) {
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), value),
            ("add", Value::Object(m)) => {
                m.insert(last, value);
            }
            ("replace", Value::Object(m)) => {
                assert!(m.contains_key(&last), "replace of a missing {path}");
                m.insert(last, value);
            }
            (o, t) => panic!("unexpected {o} on {t}"),
        }
    }
    doc
}

// === which patch, exactly ===

#[test]
fn opted_in_pod_on_1_29_gets_a_native_sidecar_as_the_first_init_container() {
    let response = mutate(&admission_review(app_pod()), &settings_for("v1.29.0"));
    assert_eq!(
        patch_of(&response),
        vec![
            json!({ "op": "add", "path": "/spec/containers/0/env/-", "value": bootstrap() }),
            json!({ "op": "add", "path": "/spec/initContainers/0", "value": kelp_container(true) }),
            json!({ "op": "add", "path": "/metadata/annotations/kelp.io~1injected", "value": "true" }),
            sidecar_label(),
        ]
    );
}

#[test]
fn opted_in_pod_on_1_28_gets_a_plain_container_after_the_apps() {
    let mut pod = app_pod();
    pod["spec"]["containers"] = json!([
        { "name": "orders", "image": "orders:1.4" },
        { "name": "worker", "image": "orders:1.4", "env": [{ "name": "KAFKA_BOOTSTRAP_SERVERS", "value": "elsewhere:9092" }] }
    ]);
    let response = mutate(&admission_review(pod), &settings_for("v1.28.9-eks-1a2b3c"));
    assert_eq!(
        patch_of(&response),
        vec![
            // No env list yet: the whole list is added. The worker keeps its own address.
            json!({ "op": "add", "path": "/spec/containers/0/env", "value": [bootstrap()] }),
            json!({ "op": "add", "path": "/spec/containers/-", "value": kelp_container(false) }),
            json!({ "op": "add", "path": "/metadata/annotations/kelp.io~1injected", "value": "true" }),
            sidecar_label(),
        ]
    );
}

#[test]
fn newer_kubernetes_versions_also_get_a_native_sidecar() {
    for version in ["v1.30.2", "v1.33.0+k3s1", "1.36+"] {
        let ops = patch_of(&mutate(&admission_review(app_pod()), &settings_for(version)));
        assert_eq!(ops[1]["path"], "/spec/initContainers/0", "{version}");
        assert_eq!(ops[1]["value"]["restartPolicy"], "Always", "{version}");
    }
}

#[test]
fn pod_without_init_containers_gets_the_whole_list() {
    let mut pod = app_pod();
    pod["spec"].as_object_mut().unwrap().remove("initContainers");
    let response = mutate(&admission_review(pod), &settings_for("v1.29.3"));
    assert_eq!(
        patch_of(&response),
        vec![
            json!({ "op": "add", "path": "/spec/containers/0/env/-", "value": bootstrap() }),
            json!({ "op": "add", "path": "/spec/initContainers", "value": [kelp_container(true)] }),
            json!({ "op": "add", "path": "/metadata/annotations/kelp.io~1injected", "value": "true" }),
            sidecar_label(),
        ]
    );
}

#[test]
fn pod_opted_in_by_label_without_annotations_gets_the_annotation_map() {
    let mut pod = app_pod();
    let metadata = pod["metadata"].as_object_mut().unwrap();
    metadata.remove("annotations");
    metadata.insert("labels".into(), json!({ "app": "orders", "kelp.io/inject": "true" }));
    pod["spec"]["initContainers"] = Value::Null;
    let response = mutate(&admission_review(pod), &settings_for("v1.28.0"));
    assert_eq!(
        patch_of(&response),
        vec![
            json!({ "op": "add", "path": "/spec/containers/0/env/-", "value": bootstrap() }),
            json!({ "op": "add", "path": "/spec/containers/-", "value": kelp_container(false) }),
            json!({ "op": "add", "path": "/metadata/annotations", "value": { "kelp.io/injected": "true" } }),
            sidecar_label(),
        ]
    );
}

#[test]
fn pod_that_does_not_opt_in_is_left_alone() {
    let settings = settings_for("v1.29.0");
    let mut no_annotation = app_pod();
    no_annotation["metadata"]["annotations"] = json!({ "prometheus.io/scrape": "true" });
    let mut opted_out = app_pod();
    opted_out["metadata"]["annotations"] = json!({ "kelp.io/inject": "false" });
    let mut no_metadata_maps = app_pod();
    no_metadata_maps["metadata"] = json!({ "generateName": "orders-" });
    // The annotation is the pod's own word: it overrides a label set by a template.
    let mut annotation_wins = app_pod();
    annotation_wins["metadata"]["annotations"] = json!({ "kelp.io/inject": "false" });
    annotation_wins["metadata"]["labels"] = json!({ "kelp.io/inject": "true" });
    for pod in [no_annotation, opted_out, no_metadata_maps, annotation_wins] {
        let (response, outcome) = review(&admission_review(pod.clone()), &settings);
        assert_untouched(&response);
        assert_eq!(outcome, Outcome::Skipped("not opted in"), "{pod}");
    }
}

#[test]
fn opt_in_value_is_case_insensitive() {
    let mut pod = app_pod();
    pod["metadata"]["annotations"]["kelp.io/inject"] = json!("True");
    let (_, outcome) = review(&admission_review(pod), &settings_for("v1.29.0"));
    assert_eq!(outcome, Outcome::Injected { native: true });
}

#[test]
fn already_injected_pod_is_not_injected_again() {
    let settings = settings_for("v1.29.0");
    let mut by_hand_container = app_pod();
    by_hand_container["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "kelp", "image": "kelp:0.1.0" }));
    let mut by_hand_native = app_pod();
    by_hand_native["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "kelp", "restartPolicy": "Always" }));
    let mut marked = app_pod();
    marked["metadata"]["annotations"]["kelp.io/injected"] = json!("true");
    for pod in [by_hand_container, by_hand_native, marked] {
        let (response, outcome) = review(&admission_review(pod.clone()), &settings);
        assert_untouched(&response);
        assert_eq!(outcome, Outcome::Skipped("already injected"), "{pod}");
    }
}

#[test]
fn a_pod_without_labels_gets_the_label_map() {
    let mut pod = app_pod();
    pod["metadata"] = json!({
        "generateName": "orders-",
        "labels": null,
        "annotations": { "kelp.io/inject": "true" }
    });
    let ops = patch_of(&mutate(&admission_review(pod), &settings_for("v1.29.0")));
    assert_eq!(
        ops.last().unwrap(),
        &json!({ "op": "add", "path": "/metadata/labels", "value": { "kelp.io/sidecar": "true" } })
    );
}

/// kelp in a host-network pod would open its ports in the node's network namespace: the
/// webhook refuses it, visibly (a warning `kubectl` prints), without blocking the pod.
#[test]
fn a_host_network_pod_is_admitted_without_kelp_and_with_a_warning() {
    let settings = settings_for("v1.29.0");
    let mut pod = app_pod();
    pod["spec"]["hostNetwork"] = json!(true);
    let (response, outcome) = review(&admission_review(pod.clone()), &settings);
    let warning = assert_allowed_with_warning(&response);
    assert!(warning.starts_with("kelp was not injected: "), "{warning}");
    assert!(warning.contains("hostNetwork"), "{warning}");
    assert_eq!(outcome, Outcome::Refused(kelp::webhook::HOST_NETWORK_REFUSAL));

    // hostNetwork: false (or null) is the ordinary case.
    for value in [json!(false), Value::Null] {
        pod["spec"]["hostNetwork"] = value;
        let (_, outcome) = review(&admission_review(pod.clone()), &settings);
        assert_eq!(outcome, Outcome::Injected { native: true });
    }
    // A pod that already runs kelp is left alone before hostNetwork is looked at.
    pod["spec"]["hostNetwork"] = json!(true);
    pod["metadata"]["annotations"]["kelp.io/injected"] = json!("true");
    let (response, outcome) = review(&admission_review(pod.clone()), &settings);
    assert_untouched(&response);
    assert_eq!(outcome, Outcome::Skipped("already injected"));
    // Not a boolean: a malformed pod, allowed with a warning like any other.
    let mut odd = app_pod();
    odd["spec"]["hostNetwork"] = json!("yes");
    let (response, outcome) = review(&admission_review(odd), &settings);
    assert!(assert_allowed_with_warning(&response).contains("spec.hostNetwork"));
    assert!(matches!(outcome, Outcome::Failed(_)));
}

#[test]
fn applying_the_patch_gives_an_injected_pod_that_a_second_review_leaves_alone() {
    for (version, native) in [("v1.29.0", true), ("v1.28.0", false)] {
        let settings = settings_for(version);
        let pod = app_pod();
        let injected = apply(pod.clone(), &patch_of(&mutate(&admission_review(pod), &settings)));
        let spec = &injected["spec"];
        if native {
            assert_eq!(spec["initContainers"][0]["name"], "kelp");
            assert_eq!(spec["initContainers"][1]["name"], "migrate");
            assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        } else {
            assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
            assert_eq!(spec["containers"][1]["name"], "kelp");
            assert!(spec["containers"][1].get("restartPolicy").is_none());
        }
        assert_eq!(
            spec["containers"][0]["env"],
            json!([{ "name": "LOG_LEVEL", "value": "info" }, bootstrap()])
        );
        assert_eq!(injected["metadata"]["annotations"]["kelp.io/injected"], "true");
        assert_eq!(
            injected["metadata"]["labels"],
            json!({ "app": "orders", "kelp.io/sidecar": "true" }),
            "the pod's own labels stay; the NetworkPolicy's is added"
        );
        let (response, outcome) = review(&admission_review(injected), &settings);
        assert_untouched(&response);
        assert_eq!(outcome, Outcome::Skipped("already injected"));
    }
}

#[test]
fn volumes_and_a_short_grace_period_are_patched_too() {
    let volumes = json!([{ "name": "kelp-quotas", "configMap": { "name": "kelp-quotas" } }]);
    let sidecar = sidecar_file(volumes.clone());
    let settings = InjectSettings::from_sidecar_json(
        &sidecar,
        true,
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
    )
    .unwrap();
    let kelp = {
        let mut c = serde_json::from_str::<Value>(&sidecar).unwrap()["container"].clone();
        c["restartPolicy"] = json!("Always");
        c
    };

    // No volumes yet, a 10 s grace period: the list is added and the period raised.
    let mut pod = app_pod();
    pod["spec"]["terminationGracePeriodSeconds"] = json!(10);
    let grace = settings.min_grace_seconds;
    assert!(grace > 10);
    assert_eq!(
        patch_of(&mutate(&admission_review(pod), &settings)),
        vec![
            json!({ "op": "add", "path": "/spec/containers/0/env/-", "value": bootstrap() }),
            json!({ "op": "add", "path": "/spec/initContainers/0", "value": kelp }),
            json!({ "op": "add", "path": "/spec/volumes", "value": volumes }),
            json!({ "op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": grace }),
            json!({ "op": "add", "path": "/metadata/annotations/kelp.io~1injected", "value": "true" }),
            sidecar_label(),
        ]
    );

    // Existing volumes and a long enough grace period: append, leave the period alone.
    let mut pod = app_pod();
    pod["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
    pod["spec"]["terminationGracePeriodSeconds"] = json!(120);
    let ops = patch_of(&mutate(&admission_review(pod), &settings));
    assert_eq!(ops[2], json!({ "op": "add", "path": "/spec/volumes/-", "value": volumes[0] }));
    assert_eq!(ops.len(), 5, "{ops:?}");

    // A volume of the same name already there: refuse rather than mount someone else's.
    let mut pod = app_pod();
    pod["spec"]["volumes"] = json!([{ "name": "kelp-quotas", "emptyDir": {} }]);
    let warning = assert_allowed_with_warning(&mutate(&admission_review(pod), &settings));
    assert!(warning.contains("kelp-quotas"), "{warning}");
}

#[test]
fn the_bootstrap_variable_name_and_value_are_configurable() {
    let settings = InjectSettings::from_sidecar_json(
        &sidecar_file(json!([])),
        false,
        "SPRING_KAFKA_BOOTSTRAP_SERVERS",
        "localhost:19092",
    )
    .unwrap();
    let ops = patch_of(&mutate(&admission_review(app_pod()), &settings));
    assert_eq!(
        ops[0],
        json!({ "op": "add", "path": "/spec/containers/0/env/-", "value": { "name": "SPRING_KAFKA_BOOTSTRAP_SERVERS", "value": "localhost:19092" } })
    );
}

#[test]
fn other_requests_are_allowed_untouched() {
    let settings = settings_for("v1.29.0");
    let mut update = admission_review(app_pod());
    update["request"]["operation"] = json!("UPDATE");
    let mut deployment = admission_review(
        json!({ "metadata": { "annotations": { "kelp.io/inject": "true" } }, "spec": {} }),
    );
    deployment["request"]["kind"] =
        json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let mut ephemeral = admission_review(app_pod());
    ephemeral["request"]["subResource"] = json!("ephemeralcontainers");
    for r in [update, deployment, ephemeral] {
        let (response, outcome) = review(&r, &settings);
        assert_untouched(&response);
        assert_eq!(outcome, Outcome::Skipped("not a pod creation"));
    }
}

#[test]
fn malformed_reviews_are_allowed_with_a_warning() {
    let settings = settings_for("v1.29.0");
    let mut no_uid = admission_review(app_pod());
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut no_object = admission_review(app_pod());
    no_object["request"]["object"] = Value::Null;
    let mut bad_containers = admission_review(app_pod());
    bad_containers["request"]["object"]["spec"]["containers"] = json!({ "name": "orders" });
    let mut bad_env = admission_review(app_pod());
    bad_env["request"]["object"]["spec"]["containers"][0]["env"] = json!("LOG_LEVEL=info");
    let cases = [
        (Value::Null, "not an AdmissionReview"),
        (json!({ "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1" }), "no request"),
        (no_uid, "no uid"),
        (no_object, "no pod object"),
        (bad_containers, "spec.containers is not a list"),
        (bad_env, "spec.containers[0].env is not a list"),
    ];
    for (request, expected) in cases {
        let (response, outcome) = review(&request, &settings);
        let warning = assert_allowed_with_warning(&response);
        assert!(warning.contains(expected), "{warning} / {expected}");
        assert!(matches!(outcome, Outcome::Failed(_)));
        assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(response["kind"], "AdmissionReview");
    }
    // The uid is echoed whenever there is one, so the API server accepts the answer.
    let (response, _) = review(&bad_containers_review(), &settings);
    assert_eq!(response["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
}

fn bad_containers_review() -> Value {
    let mut r = admission_review(app_pod());
    r["request"]["object"]["spec"]["containers"] = json!(7);
    r
}

// === the binary, over TLS ===

/// `kelp webhook` as a child process; killed on drop.
struct WebhookProcess(Child);

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Strip ANSI colour sequences from a log line.
fn plain_text(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn https_request(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    request: String,
) -> (u16, String) {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(kelp::webhook::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the webhook's certificate verifies");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[tokio::test]
async fn kelp_webhook_answers_an_admission_review_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    let sidecar_path = dir.path().join("sidecar.json");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&sidecar_path, sidecar_file(json!([]))).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .arg("webhook")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .arg("--sidecar-file")
        .arg(&sidecar_path)
        .args(["--kube-version", "v1.29.2"])
        .env("KELP_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kelp binary runs");
    let stderr = child.stderr.take().unwrap();
    let _process = WebhookProcess(child);

    // The bound address is in the "serving webhook" line; keep draining stderr afterwards so
    // the child never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = plain_text(&line);
            if line.contains("serving webhook") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_string);
                let _ = tx.send(addr);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: std::net::SocketAddr = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(a)) => break a.parse().unwrap(),
            Ok(None) => panic!("serving line without an address"),
            Err(_) if Instant::now() > deadline => panic!("kelp webhook did not start"),
            Err(_) => {}
        }
    };

    let ca = cert.cert.der().clone();
    let (status, body) = https_request(
        addr,
        &ca,
        "GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let review_body = admission_review(app_pod()).to_string();
    let request = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{review_body}",
        review_body.len()
    );
    let (status, body) = https_request(addr, &ca, request).await;
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        patch_of(&response),
        vec![
            json!({ "op": "add", "path": "/spec/containers/0/env/-", "value": bootstrap() }),
            json!({ "op": "add", "path": "/spec/initContainers/0", "value": kelp_container(true) }),
            json!({ "op": "add", "path": "/metadata/annotations/kelp.io~1injected", "value": "true" }),
            sidecar_label(),
        ]
    );

    // A body that is not JSON still gets an answer that admits the pod.
    let request = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_string();
    let (status, body) = https_request(addr, &ca, request).await;
    assert_eq!(status, 200);
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_allowed_with_warning(&response);
}

#[test]
fn a_renewed_certificate_is_picked_up_and_a_broken_one_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |c: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        std::fs::write(&cert_path, c.cert.pem()).unwrap();
        std::fs::write(&key_path, c.signing_key.serialize_pem()).unwrap();
    };
    write(&rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap());
    let cert = kelp::webhook::ReloadingCert::load(&cert_path, &key_path).unwrap();
    assert!(!cert.reload(), "unchanged files are not a new certificate");
    write(&rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap());
    assert!(cert.reload(), "a renewal is picked up");
    std::fs::write(&key_path, "half-written").unwrap();
    assert!(!cert.reload(), "a broken pair keeps the previous certificate");
    assert!(
        kelp::webhook::ReloadingCert::load(&cert_path, &key_path).is_err(),
        "but fails a start"
    );
}

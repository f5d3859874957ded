//! AdmissionReview bodies into `webhook::review`: raw bytes as the HTTPS server parses them,
//! and real reviews whose JSON tree was edited (values replaced, keys dropped or retyped).
//! Whatever comes in, the answer allows the pod, repeats the request's uid, and carries a
//! JSON Patch that applies to the pod it was made for.

use arbitrary::Unstructured;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::{Gen, Target, some_bytes};
use crate::webhook::{InjectSettings, review};

pub const WEBHOOK: Target = Target {
    name: "webhook",
    about: "AdmissionReview JSON (raw bytes, or real reviews with edited trees) into webhook::review",
    run: webhook_target,
    seeds: webhook_seeds,
    max_len: 4096,
    weight: 10,
    memory_base: 1 << 20,
    memory_per_byte: 256,
};

fn settings(native: bool, volumes: bool) -> InjectSettings {
    let file = json!({
        "container": {
            "name": "kelp",
            "image": "kelp:0.1.0",
            "env": [{ "name": "KELP_SHUTDOWN_GRACE_MS", "value": "25000" }],
        },
        "volumes": if volumes { json!([{ "name": "kelp-quotas", "configMap": { "name": "q" } }]) } else { json!([]) },
    });
    InjectSettings::from_sidecar_json(
        &file.to_string(),
        native,
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
    )
    .expect("sidecar settings")
}

/// An AdmissionReview of an opted-in pod, as an API server sends it.
fn sample_review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "operation": "CREATE",
            "object": {
                "metadata": {
                    "name": "shop",
                    "annotations": { "kelp.io/inject": "true" },
                    "labels": { "app": "shop" },
                },
                "spec": {
                    "containers": [
                        { "name": "app", "image": "shop:1", "env": [{ "name": "A", "value": "1" }] },
                        { "name": "side", "image": "side:1" },
                    ],
                    "initContainers": [{ "name": "init", "image": "init:1" }],
                    "volumes": [{ "name": "data", "emptyDir": {} }],
                    "terminationGracePeriodSeconds": 10,
                },
            },
        },
    })
}

/// Names the review's tree uses, so that edits hit the keys the webhook reads.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "request",
    "uid",
    "operation",
    "subResource",
    "group",
    "object",
    "metadata",
    "annotations",
    "labels",
    "kelp.io/inject",
    "kelp.io/injected",
    "spec",
    "containers",
    "initContainers",
    "env",
    "name",
    "volumes",
    "terminationGracePeriodSeconds",
];

fn small_value(u: &mut Unstructured, depth: u8) -> Gen<Value> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<f64>()?),
        4 => json!(*u.choose(&["true", "TRUE", "Pod", "CREATE", "kelp", "", "v1", "~/"])?),
        5 => json!(String::from_utf8_lossy(some_bytes(u, 8)?)),
        6 if depth < 4 => {
            let mut a = Vec::new();
            for _ in 0..u.int_in_range(0..=3u8)? {
                a.push(small_value(u, depth + 1)?);
            }
            Value::Array(a)
        }
        7 if depth < 4 => {
            let mut o = Map::new();
            for _ in 0..u.int_in_range(0..=3u8)? {
                o.insert(u.choose(KEYS)?.to_string(), small_value(u, depth + 1)?);
            }
            Value::Object(o)
        }
        _ => json!({}),
    })
}

/// Walk to a random node of `v` and edit it.
fn edit(u: &mut Unstructured, v: &mut Value) -> Gen<()> {
    let descend = u.ratio(3u8, 4)?;
    match v {
        Value::Object(o) if descend && !o.is_empty() => {
            let i = u.choose_index(o.len())?;
            let key = o.keys().nth(i).cloned().expect("index within the map");
            match u.int_in_range(0..=5u8)? {
                0 => {
                    o.remove(&key);
                }
                1 => {
                    o.insert(u.choose(KEYS)?.to_string(), small_value(u, 0)?);
                }
                _ => edit(u, o.get_mut(&key).expect("key present"))?,
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = u.choose_index(a.len())?;
            match u.int_in_range(0..=5u8)? {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let copy = a[i].clone();
                    a.push(copy);
                }
                _ => edit(u, &mut a[i])?,
            }
        }
        _ => *v = small_value(u, 0)?,
    }
    Ok(())
}

/// Input: byte 0 chooses raw JSON (the rest is the body) or an edited sample review (the
/// rest drives the edits); it also picks native or plain injection and sidecar volumes.
fn webhook_target(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let settings = settings(mode & 2 != 0, mode & 4 != 0);
    let request = if mode & 1 == 0 {
        // As the HTTPS server does: a body that is not JSON is reviewed as `null`.
        serde_json::from_slice(rest).unwrap_or(Value::Null)
    } else {
        let mut u = Unstructured::new(rest);
        let mut v = sample_review();
        for _ in 0..u.int_in_range(0..=4u8).unwrap_or(0) {
            if edit(&mut u, &mut v).is_err() {
                break;
            }
        }
        v
    };
    check(&request, &settings);
}

fn check(request: &Value, settings: &InjectSettings) {
    let (answer, _) = review(request, settings);
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "a pod is never refused");
    let uid = request.pointer("/request/uid").and_then(Value::as_str).unwrap_or("");
    assert_eq!(response["uid"], uid);
    let Some(patch) = response.get("patch") else { return };
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let ops: Vec<Value> = serde_json::from_slice(&patch).expect("the patch is JSON");
    let mut pod = request.pointer("/request/object").cloned().expect("a patch is for a pod");
    for op in &ops {
        apply(&mut pod, op).unwrap_or_else(|e| panic!("{op} does not apply: {e}\n{request}"));
    }
    // Applied, the patch yields a pod the webhook leaves alone.
    let mut again = request.clone();
    again["request"]["object"] = pod;
    let (second, _) = review(&again, settings);
    assert!(second["response"].get("patch").is_none(), "a second pass patches again");
}

/// RFC 6902 `add` and `replace` (the operations the webhook emits), strictly: the parent
/// must exist, an array index must be in range, `replace` needs an existing target.
fn apply(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("no path")?;
    let value = op.get("value").cloned().ok_or("no value")?;
    let tokens: Vec<String> = path
        .strip_prefix('/')
        .ok_or("path without a leading slash")?
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().ok_or("empty path")?;
    let mut at = doc;
    for t in parents {
        at = match at {
            Value::Object(o) => o.get_mut(t).ok_or_else(|| format!("no {t}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("bad index {t}"))?;
                a.get_mut(i).ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err(format!("{t} under a scalar")),
        };
    }
    match (op["op"].as_str(), at) {
        (Some("add"), Value::Object(o)) => {
            o.insert(last.clone(), value);
        }
        (Some("replace"), Value::Object(o)) if o.contains_key(last) => {
            o.insert(last.clone(), value);
        }
        (Some("add"), Value::Array(a)) if last == "-" => a.push(value),
        (Some("add"), Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
            if i > a.len() {
                return Err(format!("index {i} out of range"));
            }
            a.insert(i, value);
        }
        (op, _) => return Err(format!("{op:?} at {path} cannot apply")),
    }
    Ok(())
}

fn webhook_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for mode in [0u8, 2, 4, 6] {
        let mut raw = vec![mode];
        raw.extend_from_slice(sample_review().to_string().as_bytes());
        out.push(raw);
        out.push(vec![mode | 1, 2, 0, 1, 2, 3]);
    }
    out
}

#!/usr/bin/env python3
"""Render helm/kelp in several configurations, lint it, and validate every manifest against
the Kubernetes OpenAPI schemas, all offline (no cluster, no helm binary).

Rendering and linting use helm-python-sdk (Helm's own library); validation uses
kubernetes-validate. Both are installed by scripts/install-deps.sh. One scenario runs the
`kelp webhook` binary (KELP_BIN, else target/debug/kelp) with the chart's rendered TLS Secret
and sidecar ConfigMap. Paths are relative to this file, so it runs from anywhere. Exit status
0 means every check passed. tests/helm.rs runs this under cargo nextest.
"""

import base64
import copy
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import helm_python
    import kubernetes_validate
    import yaml
    from helm_python import _native
except ImportError as e:  # a missing tool is a failure, not a skip
    print(f"render_and_validate: {e}; run scripts/install-deps.sh", file=sys.stderr)
    sys.exit(2)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kelp"
# Schemas to validate against: the last version without native sidecars, the first with
# them, and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.28.0", "1.29.0", kubernetes_validate.latest_version()]
RELEASE, NAMESPACE = "shop", "kafka-sidecars"
# Kinds outside Kubernetes itself, checked by hand below.
CERT_MANAGER = {"Certificate", "Issuer"}

failures = []
checks = 0
# The label the webhook puts on pods it injects, which the NetworkPolicy selects.
SIDECAR_LABEL = re.search(r'pub const SIDECAR_LABEL: &str = "([^"]+)";',
                          (ROOT / "src" / "webhook" / "inject.rs").read_text()).group(1)


def check(ok, what):
    global checks
    checks += 1
    if not ok:
        failures.append(what)
        print(f"FAIL {what}")


def env_names():
    """Every KELP_* variable declared in src/config.rs."""
    text = (ROOT / "src" / "config.rs").read_text()
    return re.findall(r'^pub const ENV_\w+: &str = "(KELP_\w+)";', text, re.M)


def lower_camel(env, prefix):
    words = env[len(prefix):].lower().split("_")
    return words[0] + "".join(w.capitalize() for w in words[1:])


def render(values, kube_version, chart=CHART):
    """Rendered manifests by template path. helm-python-sdk's Chart.render does not expose
    the kube version; its native call takes it as a render option (checked with 0.2.2)."""
    loaded = helm_python.Chart.load(str(chart))
    opts = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": f"v{kube_version}", "is_install": True}
    out = _native.call_string("helm_render", loaded._raw(), json.dumps(values), json.dumps(opts))
    return json.loads(out)


def documents(rendered):
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    check(len(found) == 1, f"exactly one {kind} (found {len(found)})")
    return found[0] if found else {}


def validate(docs, scenario, kube_version):
    for d in docs:
        name = f"{scenario} k8s {kube_version}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CERT_MANAGER:
            check(d["apiVersion"] == "cert-manager.io/v1", f"{name} apiVersion")
            continue
        try:
            kubernetes_validate.validate(d, kube_version, strict=True)
            check(True, name)
        except kubernetes_validate.ValidationError as e:
            check(False, f"{name}: {e.message} at {list(e.path)}")


def validate_pod(pod_spec, what, kube_version):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}
    try:
        kubernetes_validate.validate(pod, kube_version, strict=True)
        check(True, what)
    except kubernetes_validate.ValidationError as e:
        check(False, f"{what}: {e.message} at {list(e.path)}")


def lint(values, kube_version):
    report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    check(not problems, f"lint {json.dumps(values)} on {kube_version}: {problems}")


def webhook_env(docs):
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-webhook"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def sidecar_file(docs):
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-sidecar"))
    return json.loads(cm["data"]["sidecar.json"])


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# === scenarios ===

ENVS = env_names()
SERVE_ENVS = [e for e in ENVS if not e.startswith("KELP_WEBHOOK_")]
WEBHOOK_ENVS = [e for e in ENVS if e.startswith("KELP_WEBHOOK_")]
check(len(SERVE_ENVS) >= 15 and len(WEBHOOK_ENVS) >= 5, f"settings found in src/config.rs: {ENVS}")


def scenario_defaults():
    for kv in KUBE_VERSIONS:
        docs = documents(render({}, kv))
        validate(docs, "defaults", kv)
        lint({}, kv)
        kinds = sorted({d["kind"] for d in docs})
        check(kinds == sorted(["ConfigMap", "Deployment", "MutatingWebhookConfiguration", "PodDisruptionBudget",
                               "Secret", "Service", "ServiceAccount"]), f"default kinds {kinds}")
        mwc = one(docs, "MutatingWebhookConfiguration")
        hook = mwc["webhooks"][0]
        check(hook["failurePolicy"] == "Ignore", "failurePolicy Ignore")
        check(hook["sideEffects"] == "None", "sideEffects None")
        check(hook["admissionReviewVersions"] == ["v1"], "admissionReviewVersions v1")
        check(hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}], "only pod creations")
        check(hook["clientConfig"]["service"]["path"] == "/mutate", "path /mutate")
        check("kube-system" in hook["namespaceSelector"]["matchExpressions"][0]["values"], "kube-system excluded")
        secret = one(docs, "Secret")
        check(hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"], "caBundle is the generated CA")
        check(b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["tls.crt"]), "generated certificate is PEM")
        env = webhook_env(docs)
        check(set(WEBHOOK_ENVS) <= set(env), f"every KELP_WEBHOOK_* passed to the webhook: {sorted(env)}")
        check(set(env) <= set(ENVS), f"only known settings passed to the webhook: {sorted(set(env) - set(ENVS))}")
        check(env["KELP_WEBHOOK_KUBE_VERSION"] == f"v{kv}", f"kube version from .Capabilities: {env['KELP_WEBHOOK_KUBE_VERSION']}")
        check(env["KELP_WEBHOOK_NATIVE_SIDECAR"] == "auto", "native sidecar auto by default")
        check(env["KELP_WEBHOOK_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092", "bootstrap address from config.listen")
        sidecar = sidecar_file(docs)
        c = sidecar["container"]
        check(c["name"] == "kelp" and c["image"] == "kelp:0.1.0" and c["args"] == ["serve"], f"sidecar container {c}")
        check({e["name"] for e in c["env"]} <= set(SERVE_ENVS), "sidecar env only kelp settings")
        check({p["name"]: p["containerPort"] for p in c["ports"]} == {"kafka": 9092, "admin": 9644}, f"sidecar ports {c['ports']}")
        check({"name": "KELP_ADMIN_LISTEN", "value": "0.0.0.0:9644"} in c["env"], "admin server turned on for the probes")
        check(c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}, "liveness on /livez")
        check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, "readiness on /readyz")
        check(sidecar["volumes"] == [], "no volumes without quotas")
        # What the webhook adds must be a valid container in either position.
        native = dict(c, restartPolicy="Always")
        app = {"name": "app", "image": "app:1"}
        validate_pod({"initContainers": [native], "containers": [app]}, f"injected native sidecar on {kv}", kv)
        validate_pod({"containers": [app, c]}, f"injected plain container on {kv}", kv)


def scenario_native_sidecar_switch():
    for setting in ["true", "false"]:
        values = {"webhook": {"config": {"nativeSidecar": setting}}}
        for kv in ["1.28.0", "1.29.0"]:
            docs = documents(render(values, kv))
            validate(docs, f"nativeSidecar={setting}", kv)
            check(webhook_env(docs)["KELP_WEBHOOK_NATIVE_SIDECAR"] == setting, f"nativeSidecar={setting} reaches the webhook")
        lint(values, "1.29.0")
    docs = documents(render({"webhook": {"config": {"kubeVersion": "v1.30.1-eks-1"}}}, "1.28.0"))
    check(webhook_env(docs)["KELP_WEBHOOK_KUBE_VERSION"] == "v1.30.1-eks-1", "kubeVersion value overrides .Capabilities")


def scenario_cert_manager():
    values = {"webhook": {"tls": {"mode": "certManager"}}}
    for kv in ["1.28.0", "1.29.0"]:
        docs = documents(render(values, kv))
        validate(docs, "cert-manager", kv)
        lint(values, kv)
        check(not by_kind(docs, "Secret"), "no Secret rendered with cert-manager")
        cert, issuer = one(docs, "Certificate"), one(docs, "Issuer")
        check(issuer["spec"] == {"selfSigned": {}}, "self-signed Issuer")
        check(cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"], "Certificate uses the Issuer")
        check(f"shop-kelp-webhook.{NAMESPACE}.svc" in cert["spec"]["dnsNames"], f"service DNS name {cert['spec']['dnsNames']}")
        mwc = one(docs, "MutatingWebhookConfiguration")
        check(mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{cert['metadata']['name']}",
              "CA injected from the Certificate")
        check("caBundle" not in mwc["webhooks"][0]["clientConfig"], "caBundle left to cert-manager")
        deployment = one(docs, "Deployment")
        secret_volume = deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
        check(secret_volume == cert["spec"]["secretName"], "webhook mounts the Certificate's Secret")
    values = {"webhook": {"tls": {"mode": "certManager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}}}
    docs = documents(render(values, "1.29.0"))
    check(not by_kind(docs, "Issuer"), "no Issuer when one is given")
    check(one(docs, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}, "given issuerRef used")


def scenario_existing_secret():
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    values = {"webhook": {"tls": {"mode": "secret", "secretName": "kelp-webhook-tls", "caBundle": ca}}}
    for kv in ["1.28.0", "1.29.0"]:
        docs = documents(render(values, kv))
        validate(docs, "existing secret", kv)
        lint(values, kv)
        check(not by_kind(docs, "Secret") and not by_kind(docs, "Certificate"), "nothing TLS rendered for an existing Secret")
        check(one(docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"] == ca, "given caBundle used")
        volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        check(volumes[0]["secret"]["secretName"] == "kelp-webhook-tls", "webhook mounts the given Secret")


def sample_value(key):
    if key == "adminListen":
        return "0.0.0.0:19644"
    if key == "peerListen":
        return "0.0.0.0:19093"
    if key == "peerAllowUnauthenticated":
        return False
    if key == "peerMaxFrameBytes":
        return 2097152
    if key in ("listen", "advertisedListener"):
        return "0.0.0.0:19092"
    if key.startswith("max") or key.endswith("Ms") or key in ("nodeId", "defaultPartitions"):
        return 104857600 if key == "maxFrameBytes" else 60000 if key == "shutdownGraceMs" else 7
    if key.startswith("auto"):
        return False
    return f"sample-{key}"


def scenario_every_setting_quotas_and_example():
    config = {lower_camel(e, "KELP_"): sample_value(lower_camel(e, "KELP_")) for e in SERVE_ENVS}
    values = {"config": config, "quotas": {"rules": "quotas:\n  - client-id: <default>\n    producer_byte_rate: 1048576\n"}, "example": {"enabled": True}}
    for kv in ["1.28.0", "1.29.0"]:
        docs = documents(render(values, kv))
        validate(docs, "every setting", kv)
        lint(values, kv)
        sidecar = sidecar_file(docs)
        env = {e["name"]: e["value"] for e in sidecar["container"]["env"]}
        check(set(env) == set(SERVE_ENVS), f"one variable per config key: missing {set(SERVE_ENVS) - set(env)}, extra {set(env) - set(SERVE_ENVS)}")
        check(env["KELP_MAX_FRAME_BYTES"] == "104857600", f"large numbers keep their digits: {env['KELP_MAX_FRAME_BYTES']}")
        check(env["KELP_AUTO_CREATE_TOPICS"] == "false", "false is passed, not dropped")
        check(sidecar["volumes"] == [{"name": "kelp-quotas", "configMap": {"name": "shop-kelp-quotas"}},
                                     {"name": "kelp-peer", "secret": {"secretName": "shop-kelp-peer"}}], f"quotas and peer volumes {sidecar['volumes']}")
        check(sidecar["container"]["volumeMounts"][0]["mountPath"] == "/etc/kelp/quotas", "quotas mounted")
        check(env["KELP_PEER_SECRET_FILE"] == "sample-peerSecretFile", "a peerSecretFile set by hand is kept")
        check(env["KELP_PEER_ALLOW_UNAUTHENTICATED"] == "false", "peerAllowUnauthenticated false is passed")
        kafka_port = next(p for p in sidecar["container"]["ports"] if p["name"] == "kafka")
        check(kafka_port["containerPort"] == 19092, "kafka port from config.listen")
        admin_port = next(p for p in sidecar["container"]["ports"] if p["name"] == "admin")
        check(admin_port["containerPort"] == 19644, "admin port from config.adminListen")
        check(webhook_env(docs)["KELP_WEBHOOK_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092", "any-address listen becomes 127.0.0.1")
        quotas = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "shop-kelp-quotas")
        check("producer_byte_rate" in quotas["data"]["quotas.yaml"], "inline quota rules")
        example = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-example"))
        spec = example["spec"]["template"]["spec"]
        check([c["name"] for c in spec["containers"]] == ["app", "kelp"], "example: app then kelp")
        labels = example["spec"]["template"]["metadata"]["labels"]
        check(labels.get(SIDECAR_LABEL) == "true", f"example pods carry {SIDECAR_LABEL} (kelp.podLabels): {labels}")
        check(spec["containers"][1] == sidecar["container"], "kelp.sidecar prints what the webhook injects")
        check(spec["terminationGracePeriodSeconds"] == 65, f"grace from shutdownGraceMs: {spec['terminationGracePeriodSeconds']}")
        check(spec["volumes"] == sidecar["volumes"], "example mounts the quotas volume")


def scenario_quotas_file_and_sasl_secret():
    values = {"quotas": {"configMap": "team-quotas"}, "sasl": {"secret": "kelp-users"}}
    for kv in ["1.28.0", "1.29.0"]:
        docs = documents(render(values, kv))
        validate(docs, "quotas and sasl", kv)
        lint(values, kv)
        sidecar = sidecar_file(docs)
        env = {e["name"]: e["value"] for e in sidecar["container"]["env"]}
        check(env.get("KELP_QUOTAS_FILE") == "/etc/kelp/quotas/quotas.yaml", f"quotas file points at the mount: {env.get('KELP_QUOTAS_FILE')}")
        check(env.get("KELP_SASL_USERS_FILE") == "/etc/kelp/sasl/users.yaml", f"users file points at the mount: {env.get('KELP_SASL_USERS_FILE')}")
        check(sidecar["volumes"] == [{"name": "kelp-quotas", "configMap": {"name": "team-quotas"}},
                                     {"name": "kelp-sasl", "secret": {"secretName": "kelp-users"}}], f"volumes {sidecar['volumes']}")
        mounts = {m["name"]: m["mountPath"] for m in sidecar["container"]["volumeMounts"]}
        check(mounts == {"kelp-quotas": "/etc/kelp/quotas", "kelp-sasl": "/etc/kelp/sasl"}, f"mounts {mounts}")


def scenario_tls_secrets():
    values = {"listenerTls": {"secret": "kelp-kafka-tls", "clientCaKey": "ca.crt"}, "seaweedfsTls": {"secret": "kelp-seaweedfs-client"},
              "config": {"tlsKey": "/elsewhere/key.pem"}}
    for kv in ["1.28.0", "1.29.0"]:
        docs = documents(render(values, kv))
        validate(docs, "tls secrets", kv)
        lint(values, kv)
        sidecar = sidecar_file(docs)
        env = {e["name"]: e["value"] for e in sidecar["container"]["env"]}
        want = {"KELP_TLS_CERT": "/etc/kelp/tls/tls.crt", "KELP_TLS_KEY": "/elsewhere/key.pem", "KELP_TLS_CLIENT_CA": "/etc/kelp/tls/ca.crt",
                "KELP_SEAWEEDFS_TLS_CA": "/etc/kelp/seaweedfs-tls/ca.crt", "KELP_SEAWEEDFS_TLS_CERT": "/etc/kelp/seaweedfs-tls/tls.crt",
                "KELP_SEAWEEDFS_TLS_KEY": "/etc/kelp/seaweedfs-tls/tls.key"}
        got = {k: env.get(k) for k in want}
        check(got == want, f"TLS files point at the mounts unless set: {got}")
        check([e["name"] for e in sidecar["container"]["env"]].count("KELP_TLS_KEY") == 1, "a set file is not passed twice")
        check(sidecar["volumes"] == [{"name": "kelp-tls", "secret": {"secretName": "kelp-kafka-tls"}},
                                     {"name": "kelp-seaweedfs-tls", "secret": {"secretName": "kelp-seaweedfs-client"}}], f"volumes {sidecar['volumes']}")
        mounts = {m["name"]: m["mountPath"] for m in sidecar["container"]["volumeMounts"]}
        check(mounts == {"kelp-tls": "/etc/kelp/tls", "kelp-seaweedfs-tls": "/etc/kelp/seaweedfs-tls"}, f"mounts {mounts}")


def scenario_webhook_disabled():
    docs = documents(render({"webhook": {"enabled": False}}, "1.29.0"))
    check(docs == [], f"nothing rendered without the webhook: {[d['kind'] for d in docs]}")
    lint({"webhook": {"enabled": False}}, "1.29.0")


def scenario_bad_values_fail():
    for values, expected in [
        ({"webhook": {"tls": {"mode": "manual"}}}, "webhook.tls.mode"),
        ({"webhook": {"tls": {"mode": "secret"}}}, "webhook.tls.secretName"),
        ({"webhook": {"tls": {"mode": "secret", "secretName": "x"}}}, "webhook.tls.caBundle"),
        ({"quotas": {"configMap": "a", "rules": "b"}}, "not both"),
        ({"config": {"adminListen": None}}, "config.adminListen"),
        ({"config": {"peerListen": "0.0.0.0:9093"}, "peerSecret": {"create": False}}, "peerSecret.name"),
        ({"config": {"peerListen": "0.0.0.0:9093", "peerAllowUnauthenticated": True, "peerSecretFile": "/s"}},
         "config.peerAllowUnauthenticated"),
    ]:
        try:
            render(values, "1.29.0")
            check(False, f"{values} should not render")
        except helm_python.HelmError as e:
            check(expected in str(e), f"{values} fails naming {expected}: {e}")


def scenario_admin_server_off():
    values = {"config": {"adminListen": None}, "sidecar": {"livenessProbe": None, "readinessProbe": None, "startupProbe": None}}
    docs = documents(render(values, "1.29.0"))
    validate(docs, "admin server off", "1.29.0")
    c = sidecar_file(docs)["container"]
    check([p["name"] for p in c["ports"]] == ["kafka"] and not any(k.endswith("Probe") for k in c), "no admin port, no probes")
    check(all(e["name"] != "KELP_ADMIN_LISTEN" for e in c["env"]), "admin server left off")


def kelp_env(docs):
    return {e["name"]: e["value"] for e in sidecar_file(docs)["container"]["env"]}


def run_kelp_serve(env, tmp, within=20):
    """`kelp serve` with the sidecar's environment, moved onto free loopback ports. Returns
    (exit code or None if it was still serving, its log)."""
    env = dict(env, KELP_LISTEN="127.0.0.1:0", KELP_ADMIN_LISTEN="127.0.0.1:0", KELP_MASTER="127.0.0.1:9333")
    env.pop("KELP_FILER", None)
    if "KELP_PEER_LISTEN" in env:
        env["KELP_PEER_LISTEN"] = "127.0.0.1:0"
    log = Path(tmp) / "kelp.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([kelp_binary(), "serve"], env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1", **env},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out)
        deadline = time.time() + within
        while time.time() < deadline and proc.poll() is None and "serving kafka" not in log.read_text():
            time.sleep(0.1)
        code = proc.poll()
        if code is None:
            proc.kill()
            proc.wait()
    return code, re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())


def scenario_peer_secret():
    """A peer listener gets the peer Secret: created (random, 48 characters) or named, mounted,
    and KELP_PEER_SECRET_FILE pointed at it; kelp itself starts with what the chart renders,
    and refuses to without the secret."""
    values = {"config": {"peerListen": "0.0.0.0:9093"}}
    for kv in ["1.28.0", "1.29.0"]:
        docs = documents(render(values, kv))
        validate(docs, "peer listener", kv)
        lint(values, kv)
        secret = next((d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == "shop-kelp-peer"), None)
        check(secret is not None, f"peer Secret created: {[d['metadata']['name'] for d in by_kind(docs, 'Secret')]}")
        if secret is None:
            continue
        value = base64.b64decode(secret["data"]["secret"]).decode()
        check(re.fullmatch(r"[A-Za-z0-9]{48}", value) is not None, f"48 random letters and digits: {value!r}")
        sidecar = sidecar_file(docs)
        check(kelp_env(docs).get("KELP_PEER_SECRET_FILE") == "/etc/kelp/peer/secret", "secret file points at the mount")
        check(sidecar["volumes"] == [{"name": "kelp-peer", "secret": {"secretName": "shop-kelp-peer"}}], f"peer volume {sidecar['volumes']}")
        check({"name": "kelp-peer", "mountPath": "/etc/kelp/peer", "readOnly": True} in sidecar["container"]["volumeMounts"],
              f"peer Secret mounted read-only: {sidecar['container'].get('volumeMounts')}")
    env = kelp_env(docs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "secret"
        path.write_text(value)
        code, log = run_kelp_serve(dict(env, KELP_PEER_SECRET_FILE=str(path)), tmp)
        check(code is None and "authenticated=true" in log, f"kelp serves with the chart's peer secret (exit {code}): {log[-2000:]}")
        env_without = {k: v for k, v in env.items() if k != "KELP_PEER_SECRET_FILE"}
        code, log = run_kelp_serve(env_without, tmp)
        check(code == 64 and "KELP_PEER_SECRET_FILE" in log, f"without it kelp exits 64 naming the variable (exit {code}): {log[-2000:]}")
        path.write_text("short\n")
        code, log = run_kelp_serve(dict(env, KELP_PEER_SECRET_FILE=str(path)), tmp)
        check(code == 64 and "KELP_PEER_SECRET_FILE" in log, f"a too short secret exits 64 (exit {code}): {log[-2000:]}")

    docs = documents(render({"config": {"peerListen": "0.0.0.0:9093"}, "peerSecret": {"name": "corp-peer", "key": "k"}}, "1.29.0"))
    check(not [d for d in by_kind(docs, "Secret") if "peer" in d["metadata"]["name"]], "a named peer Secret is not created")
    check(sidecar_file(docs)["volumes"] == [{"name": "kelp-peer", "secret": {"secretName": "corp-peer"}}], "the named Secret is mounted")
    check(kelp_env(docs)["KELP_PEER_SECRET_FILE"] == "/etc/kelp/peer/k", "its key is the file")

    values = {"config": {"peerListen": "0.0.0.0:9093", "peerAllowUnauthenticated": True}}
    docs = documents(render(values, "1.29.0"))
    validate(docs, "peer listener without authentication", "1.29.0")
    env = kelp_env(docs)
    check(not [d for d in by_kind(docs, "Secret") if "peer" in d["metadata"]["name"]], "no peer Secret when unauthenticated")
    check("KELP_PEER_SECRET_FILE" not in env and env.get("KELP_PEER_ALLOW_UNAUTHENTICATED") == "true", f"opt-out passed: {env}")
    check(sidecar_file(docs)["volumes"] == [], "nothing mounted")


def scenario_network_policy():
    """The NetworkPolicy: the peer port from kelp pods only, the admin port from the scrapers
    (and node ranges when given), nothing for a port whose sources are all unset."""
    values = {"networkPolicy": {"enabled": True}, "config": {"peerListen": "0.0.0.0:9093"}}
    for kv in KUBE_VERSIONS:
        docs = documents(render(values, kv))
        validate(docs, "network policy", kv)
    lint(values, "1.29.0")
    np = one(docs, "NetworkPolicy")
    spec = np["spec"]
    selector = {"matchLabels": {SIDECAR_LABEL: "true"}}
    check(np["metadata"]["namespace"] == NAMESPACE, "in the release namespace")
    check(spec["podSelector"] == selector, f"selects the pods the webhook labels: {spec['podSelector']}")
    check(spec["policyTypes"] == ["Ingress"], "ingress only")
    rules = {r["ports"][0]["port"]: r["from"] for r in spec["ingress"]}
    check(sorted(rules) == [9093, 9644], f"rules for the peer and admin ports: {spec['ingress']}")
    check(rules.get(9093) == [{"namespaceSelector": {}, "podSelector": selector}], f"peer port from kelp pods in any namespace: {rules.get(9093)}")
    check(rules.get(9644) == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}], f"admin port from Prometheus: {rules.get(9644)}")
    check(all(r["ports"][0]["protocol"] == "TCP" for r in spec["ingress"]), "TCP")

    app_rule = {"ports": [{"port": 8080, "protocol": "TCP"}]}
    values = {"networkPolicy": {"enabled": True, "namespaces": ["shop", "billing"], "nodeCIDRs": ["10.0.0.0/16"],
                                "extraIngress": [app_rule]}}
    docs = documents(render(values, "1.29.0"))
    validate(docs, "network policy in two namespaces", "1.29.0")
    policies = by_kind(docs, "NetworkPolicy")
    check(sorted(p["metadata"]["namespace"] for p in policies) == ["billing", "shop"], "one policy per namespace")
    ingress = policies[0]["spec"]["ingress"]
    check([r["ports"][0]["port"] for r in ingress] == [9644, 8080], f"no peer rule without a peer listener; the app's own rule kept: {ingress}")
    check({"ipBlock": {"cidr": "10.0.0.0/16"}} in ingress[0]["from"], f"node range on the admin port: {ingress[0]['from']}")

    # Sources all unset: the port is closed, never opened to everyone by an empty `from`.
    values = {"networkPolicy": {"enabled": True, "peerFrom": [], "adminFrom": []}, "config": {"peerListen": "0.0.0.0:9093"}}
    docs = documents(render(values, "1.29.0"))
    validate(docs, "network policy closing everything", "1.29.0")
    check(one(docs, "NetworkPolicy")["spec"]["ingress"] == [], "no rule at all")


def scenario_parent_chart():
    """A chart that depends on kelp and writes its pod spec by hand with .Subcharts.kelp."""
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp) / "shop"
        (parent / "templates").mkdir(parents=True)
        shutil.copytree(CHART, parent / "charts" / "kelp")
        (parent / "Chart.yaml").write_text(
            "apiVersion: v2\nname: shop\nversion: 1.0.0\nappVersion: \"7.0\"\n"
            "dependencies:\n  - name: kelp\n    version: 0.1.0\n")
        (parent / "values.yaml").write_text(
            "kelp:\n  webhook:\n    enabled: false\n  config:\n    master: seaweed.storage:9333\n  quotas:\n    configMap: shop-quotas\n")
        (parent / "templates" / "deployment.yaml").write_text("""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
spec:
  selector:
    matchLabels: {app: orders}
  template:
    metadata:
      labels: {app: orders}
    spec:
      terminationGracePeriodSeconds: {{ include "kelp.terminationGracePeriodSeconds" .Subcharts.kelp }}
      initContainers:
        {{- include "kelp.nativeSidecar" .Subcharts.kelp | nindent 8 }}
      containers:
        - name: orders
          image: orders:7.0
          env:
            - name: KAFKA_BOOTSTRAP_SERVERS
              value: {{ include "kelp.bootstrapServers" .Subcharts.kelp | quote }}
      volumes:
        {{- include "kelp.volumes" .Subcharts.kelp | nindent 8 }}
""")
        docs = documents(render({}, "1.29.0", chart=parent))
        validate(docs, "parent chart", "1.29.0")
        deployment = one(docs, "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        kelp = spec["initContainers"][0]
        check(kelp["name"] == "kelp" and kelp["restartPolicy"] == "Always", "native sidecar from the parent chart")
        check(kelp["image"] == "kelp:0.1.0", f"kelp's own appVersion as tag, not the parent's: {kelp['image']}")
        check({"name": "KELP_MASTER", "value": "seaweed.storage:9333"} in kelp["env"], "parent's kelp values apply")
        check(spec["volumes"] == [{"name": "kelp-quotas", "configMap": {"name": "shop-quotas"}}], f"volumes {spec['volumes']}")
        check(spec["terminationGracePeriodSeconds"] == 30, "default grace period")


def apply_patch(doc, ops):
    """Apply the add/replace operations the webhook emits, as the API server does."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target = doc
        for t in parents:
            target = target[int(t)] if isinstance(target, list) else target[t]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            check(op["op"] == "add" or last in target, f"replace of a missing {op['path']}")
            target[last] = op["value"]
    return doc


def kelp_binary():
    path = os.environ.get("KELP_BIN") or str(ROOT / "target" / "debug" / "kelp")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no kelp binary at {path}: build it or set KELP_BIN")
    return path


def start_webhook(docs, tmp):
    """Run `kelp webhook` with the chart's own environment, TLS Secret and sidecar ConfigMap
    (file paths moved into tmp). Returns the process and its address."""
    env = webhook_env(docs)
    secret = one(docs, "Secret")
    files = {
        "KELP_WEBHOOK_TLS_CERT": base64.b64decode(secret["data"]["tls.crt"]),
        "KELP_WEBHOOK_TLS_KEY": base64.b64decode(secret["data"]["tls.key"]),
        "KELP_WEBHOOK_SIDECAR_FILE": json.dumps(sidecar_file(docs)).encode(),
    }
    for name, content in files.items():
        path = Path(tmp) / Path(env[name]).name
        path.write_bytes(content)
        env[name] = str(path)
    env["KELP_WEBHOOK_LISTEN"] = "127.0.0.1:0"
    proc = subprocess.Popen([kelp_binary(), "webhook"], env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1", **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = []
    ready = threading.Event()

    def drain():  # read every line so the child never blocks on a full pipe
        for line in proc.stderr:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            m = re.search(r"serving webhook.* addr=(\S+)", line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(30)
    if not found:
        proc.kill()
        raise RuntimeError("kelp webhook did not start")
    host, port = found[0].rsplit(":", 1)
    return proc, (host, int(port))


def post_review(addr, docs, review):
    """POST like the API server: verify the certificate against the caBundle for the
    Service's DNS name."""
    mwc = one(docs, "MutatingWebhookConfiguration")
    ctx = ssl.create_default_context(cadata=base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"]).decode())
    service = mwc["webhooks"][0]["clientConfig"]["service"]
    body = json.dumps(review).encode()
    with socket.create_connection(addr, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=f"{service['name']}.{service['namespace']}.svc") as tls:
            tls.sendall(f"POST {service['path']}?timeout=5s HTTP/1.1\r\nHost: {service['name']}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"webhook answered {head[:40]!r}")
    return json.loads(payload)


def scenario_webhook_binary_with_the_charts_files():
    """The rendered chart drives the real binary: its certificate verifies against its
    caBundle, its sidecar file is accepted, and the patched pod is valid Kubernetes."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "orders-", "namespace": "shop", "annotations": {"kelp.io/inject": "true"}},
           "spec": {"containers": [{"name": "orders", "image": "orders:7.0"}]}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "0b5f2c1e-1111-4f6e-9a43-6b3f0f1c2d3e", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop",
                          "operation": "CREATE", "object": pod}}
    for kv, native in [("1.28.0", False), ("1.29.0", True)]:
        docs = documents(render({}, kv))
        with tempfile.TemporaryDirectory() as tmp:
            proc, addr = start_webhook(docs, tmp)
            try:
                answer = post_review(addr, docs, review)
                host_network = copy.deepcopy(review)
                host_network["request"]["object"]["spec"]["hostNetwork"] = True
                refused = post_review(addr, docs, host_network)["response"]
                check(refused["allowed"] is True and "patch" not in refused
                      and "hostNetwork" in " ".join(refused.get("warnings", [])),
                      f"a hostNetwork pod is admitted without kelp, with a warning: {refused}")
            finally:
                if native:
                    # SIGTERM: the webhook drains (a few seconds' delay) and exits cleanly.
                    proc.terminate()
                    check(proc.wait(timeout=30) == 0, f"kelp webhook exits 0 on SIGTERM (got {proc.returncode})")
                else:
                    proc.kill()
                    proc.wait()
        response = answer["response"]
        check(response["uid"] == review["request"]["uid"] and response["allowed"] is True, f"response {response}")
        patched = apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        spec = patched["spec"]
        if native:
            check(spec["initContainers"][0]["name"] == "kelp" and spec["initContainers"][0]["restartPolicy"] == "Always",
                  f"native sidecar on {kv}")
        else:
            check([c["name"] for c in spec["containers"]] == ["orders", "kelp"], f"plain container on {kv}")
        check({"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "127.0.0.1:9092"} in spec["containers"][0]["env"], "bootstrap env")
        check(patched["metadata"]["annotations"]["kelp.io/injected"] == "true", "marked injected")
        check(patched["metadata"]["labels"] == {SIDECAR_LABEL: "true"}, f"labelled for the NetworkPolicy: {patched['metadata'].get('labels')}")
        patched["metadata"]["name"] = "orders-x1"
        validate([patched], "injected pod", kv)


def main():
    for scenario in [scenario_defaults, scenario_native_sidecar_switch, scenario_cert_manager, scenario_existing_secret,
                     scenario_every_setting_quotas_and_example, scenario_quotas_file_and_sasl_secret, scenario_peer_secret,
                     scenario_network_policy, scenario_tls_secrets, scenario_webhook_disabled, scenario_bad_values_fail,
                     scenario_admin_server_off, scenario_parent_chart, scenario_webhook_binary_with_the_charts_files]:
        before = len(failures)
        try:
            scenario()
        except Exception as e:  # a crash in one scenario still reports the others
            check(False, f"{scenario.__name__} raised {type(e).__name__}: {e}")
        print(f"{'ok  ' if len(failures) == before else 'FAIL'} {scenario.__name__}")
    print(f"render_and_validate: {checks - len(failures)} checks passed, {len(failures)} failed "
          f"(Kubernetes {', '.join(KUBE_VERSIONS)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

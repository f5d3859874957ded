#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, check formatting and lints,
# build every target once, then run unit and integration tests (against a real SeaweedFS)
# with nextest's `ci` profile. Extra arguments go to `cargo nextest run` (e.g. a filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
# Formatting and lints first: they take seconds and fail before the long part does.
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Building first keeps compile errors apart from test failures, and compile time out of
# the tests' timeouts; nextest then reuses the artifacts.
cargo build --all-targets --locked
cargo nextest run --profile ci --locked "$@"

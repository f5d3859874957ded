#!/usr/bin/env bash
# Fuzzes kelp's decoders: every target of `kelp::fuzzing` (requests, frames, record batches,
# legacy message sets, SASL, AdmissionReviews, config files) through the `kelp-fuzz` runner,
# on the stable toolchain. Prints each target's input count and time, then the total.
#
#   scripts/fuzz.sh                       # 10 million inputs shared by all targets
#   scripts/fuzz.sh request batch         # only these targets
#   FUZZ_INPUTS=1000000 scripts/fuzz.sh   # fewer (or more) inputs
#
#   FUZZ_INPUTS   inputs in total, shared among the targets by weight (default 10000000)
#   FUZZ_SEED     seed of input generation (default: a new one each run; printed, so a run can
#                 be repeated exactly)
#   FUZZ_JOBS     targets fuzzed at once, one process each (default 1)
#   FUZZ_TIMEOUT  seconds without progress after which an input counts as hung (default 60)
#
# Failures (panics, aborts, allocations over a target's memory bound, hangs) are reported as
# they are found and their inputs written under $CARGO_TARGET_DIR/fuzz-crashes/<target>/;
# the script exits non-zero when there was any. Replay one with
#   $CARGO_TARGET_DIR/fuzz/kelp-fuzz replay --target <target> <file>
# and, once fixed, copy it into tests/fuzz-corpus/<target>/ so the unit tests replay it.
#
# Installs what building needs when it is missing (scripts/install-deps.sh: a C compiler for
# the zstd and ring crates among it); the fuzzing crates come through Cargo.toml/Cargo.lock
# (`fuzz` feature).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The same install step as the test suite (a C compiler and make among it): one place that
# knows what a fresh machine lacks.
scripts/install-deps.sh

inputs="${FUZZ_INPUTS:-10000000}"
seed="${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
jobs="${FUZZ_JOBS:-1}"
timeout="${FUZZ_TIMEOUT:-60}"
target_dir="${CARGO_TARGET_DIR:-target}"

# The `fuzz` profile is release with overflow checks and debug assertions on.
cargo build --locked --profile fuzz --features fuzz --bin kelp-fuzz
start=$(date +%s)
status=0
"$target_dir/fuzz/kelp-fuzz" run --inputs "$inputs" --seed "$seed" --jobs "$jobs" \
    --timeout "$timeout" --crashes "$target_dir/fuzz-crashes" "$@" || status=$?
echo "fuzz: seed $seed, $(( $(date +%s) - start )) s" >&2
exit "$status"

#!/usr/bin/env bash
# kelp's benchmark in one command: installs what is missing, builds kelp and the benchmark in
# release mode, then runs it. It starts its own SeaweedFS, kelp and SeaweedFS's Go Kafka
# gateway on loopback and prints markdown tables (about 1.5 minutes on 2 cores with the
# defaults). Arguments go to the benchmark; `scripts/bench.sh --help` lists them, e.g.
#
#   scripts/bench.sh --records 200000 --sizes 1024 --codecs none,zstd
#   scripts/bench.sh --targets kelp --perf /tmp/kelp.perf     # profile kelp under load
#
# docs/performance.md explains the output and keeps a recorded run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
# The idle-connection check opens 1,000 sockets on each side.
ulimit -n 4096 2>/dev/null || true
# The benchmark runs kelp as its own process (target/release/kelp) to read its CPU and
# memory from /proc; `cargo run --example` alone does not build that binary.
cargo build --release --locked --bin kelp
exec cargo run --release --locked --example bench -- "$@"

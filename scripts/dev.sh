#!/usr/bin/env bash
# Try kelp locally: installs what is missing, then runs `kelp dev`, which starts a
# throw-away SeaweedFS and kelp in front of it. Arguments go to `kelp dev`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
exec cargo run --release --locked -- dev "$@"

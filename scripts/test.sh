#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the external tools
# (Envoy, grpcurl, etcd) with scripts/setup.sh, builds the workspace once,
# then runs every test against that one build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"

cargo build --workspace --locked
cargo test --workspace --locked "$@"

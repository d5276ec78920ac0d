#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the external tools
# (Envoy, grpcurl, etcd) with scripts/setup.sh, builds the workspace once,
# then runs every test against that one build. Formatting and clippy are
# checked first: a tree that fails either does not pass.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked "$@"

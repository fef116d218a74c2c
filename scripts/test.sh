#!/usr/bin/env bash
# The tests, on a fresh Debian/Ubuntu machine with a Rust toolchain: installs what is missing
# (scripts/prerequisites.sh test), then runs the whole default suite with cargo-nextest.
# Extra arguments go to nextest, e.g. `scripts/test.sh -p drchain-rpc` or
# `scripts/test.sh --profile chaos` (docs: README, "Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh test
exec cargo nextest run --workspace --locked "$@"

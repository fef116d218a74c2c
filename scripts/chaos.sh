#!/usr/bin/env bash
# Failover under real faults, judged from what clients saw (docs/operations.md, "Failure
# modes"). Each node runs in its own network namespace; a seeded schedule of partitions,
# packet loss, crashes, pauses, clock steps and full disks hits a fresh cluster per seed
# while clients write through HAProxy, `drchain proxy` and straight to each candidate.
#
#   scripts/chaos.sh [--seed N] [--schedules K] [--minutes M] [--fault-seconds S]
#
# Runs schedules N, N+1, ... (default: seed 1, 100 schedules, 30 s of faults each; about
# 45 s per schedule on 2 vCPUs), starting none after M minutes. Exits non-zero on any
# violation and keeps that schedule's logs. The same seed replays the same schedule.
# Needs root; installs nftables, haproxy and libfaketime when missing; builds release
# binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "error: the chaos harness needs root (network namespaces, nftables, tmpfs): sudo $0 $*" >&2
  exit 1
fi
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
dpkg -s libfaketime >/dev/null 2>&1 || missing+=(libfaketime)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release --locked -p drchain-node -p drchain-chaos --bins
args=("$@")
case " $* " in
  *" --schedules "*) ;;
  *) args+=(--schedules 100) ;;
esac
exec target/release/drchain-chaos run --drchain target/release/drchain \
  --spec chain-spec/local.json "${args[@]}"

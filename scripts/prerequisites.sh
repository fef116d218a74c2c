#!/usr/bin/env bash
# Installs what building or testing drchain needs on Debian/Ubuntu, only what is missing.
#
#   scripts/prerequisites.sh build   clang, libclang-dev (RocksDB's bindings), g++, curl
#   scripts/prerequisites.sh test    the above, cargo-nextest, and the programs the tests
#                                    drive: openssl, sqlite3, libfaketime, nftables,
#                                    iproute2, haproxy, prometheus (promtool), chromium and
#                                    firefox-esr (where apt has them), systemd
#
# As root it runs apt-get; otherwise it uses sudo if there is one. When it cannot install,
# it exits 1 naming the exact command to run. scripts/testnet.sh, scripts/test.sh and .ci/run
# call it.
set -euo pipefail

what="${1:-build}"
case "$what" in
  build | test) ;;
  *) echo "usage: scripts/prerequisites.sh build|test" >&2; exit 2 ;;
esac

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }

need_cmd clang clang
need_cmd g++ g++
need_cmd curl curl
if command -v dpkg >/dev/null 2>&1; then
  # libclang is what bindgen (rocksdb's build) loads.
  need_pkg libclang-dev
fi
if [ "$what" = test ]; then
  need_cmd openssl openssl          # certificate interop tests
  need_cmd sqlite3 sqlite3          # replication tests: a real SQLite database
  command -v dpkg >/dev/null 2>&1 && need_pkg libfaketime   # clock-step failover test
  need_cmd nft nftables             # chaos smoke test: partitions
  need_cmd ip iproute2              #   and network namespaces
  need_cmd haproxy haproxy          #   clients through HAProxy
  need_cmd promtool prometheus      # alert rules and dashboard queries
  # The web dashboard, in real browsers (Debian's packages; Ubuntu ships them as snaps, so
  # there the test uses whichever browser is installed).
  if command -v apt-cache >/dev/null 2>&1; then
    for browser in chromium firefox-esr; do
      if ! command -v "$browser" >/dev/null 2>&1 && apt-cache show "$browser" >/dev/null 2>&1; then
        missing+=("$browser")
      fi
    done
  fi
  need_cmd systemd-analyze systemd  # the systemd unit
fi

if [ ${#missing[@]} -gt 0 ]; then
  command_line="apt-get install -y --no-install-recommends ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]} and this is not a Debian/Ubuntu system: install them with your package manager" >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "error: missing ${missing[*]}; as root run: apt-get update && $command_line" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}${sudo:+ (with sudo)}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive $command_line -qq; }; then
    echo "error: could not install ${missing[*]}; run: sudo apt-get update && sudo $command_line" >&2
    exit 1
  fi
fi

if [ "$what" = test ] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (cargo install; a few minutes)"
  if ! cargo install cargo-nextest --locked; then
    echo "error: could not install cargo-nextest; run: cargo install cargo-nextest --locked" >&2
    exit 1
  fi
fi

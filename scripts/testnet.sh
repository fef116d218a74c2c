#!/usr/bin/env bash
# A local drchain testnet from chain-spec/local.json (validators alice, bob, charlie, dave).
#
#   scripts/testnet.sh init     build the release binary; write the spec and each validator's
#                               dev key under .testnet/; print accounts and the genesis hash
#   scripts/testnet.sh start    start the validators (needs `drchain run`, see below)
#   scripts/testnet.sh status   what is prepared
#   scripts/testnet.sh clean    remove .testnet/
#
# Dev keys are well known: never use them outside a local test network.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.testnet
BIN=target/release/drchain
NAMES=(alice bob charlie dave)

build() {
  if [ ! -x "$BIN" ] || [ -n "$(find node runtime pallets Cargo.toml Cargo.lock -newer "$BIN" -print -quit)" ]; then
    echo "building $BIN (release)..."
    cargo build --release --locked -p drchain-node
  fi
}

init() {
  build
  mkdir -p "$DIR"
  "$BIN" build-spec --chain local --out "$DIR/local.json" 2> "$DIR/genesis.txt"
  for name in "${NAMES[@]}"; do
    mkdir -p "$DIR/$name"
    if [ ! -f "$DIR/$name/node.key" ]; then
      "$BIN" key generate --dev "$name" --out "$DIR/$name/node.key" 2>/dev/null
    fi
    account=$("$BIN" key inspect "$DIR/$name/node.key")
    printf '%-8s %s  %s\n' "$name" "$account" "$DIR/$name/node.key"
  done
  cat "$DIR/genesis.txt"
  echo "chain spec: $DIR/local.json"
}

start() {
  build
  if ! "$BIN" --help | grep -qE '^  run '; then
    echo "error: this drchain build cannot run a node yet: 'drchain run' arrives with the" >&2
    echo "       running chain (consensus, storage, network). 'scripts/testnet.sh init' prepares" >&2
    echo "       the testnet's spec and keys today." >&2
    exit 2
  fi
  echo "error: 'drchain run' exists but this script does not start it yet" >&2
  exit 2
}

status() {
  if [ ! -d "$DIR" ]; then
    echo "no testnet prepared (run: scripts/testnet.sh init)"
    return
  fi
  cat "$DIR/genesis.txt"
  for name in "${NAMES[@]}"; do
    [ -f "$DIR/$name/node.key" ] && printf '%-8s prepared\n' "$name"
  done
}

case "${1:-}" in
  init) init ;;
  start) start ;;
  status) status ;;
  clean) rm -rf "$DIR"; echo "removed $DIR" ;;
  *) sed -n '2,11p' "$0"; exit 1 ;;
esac

#!/usr/bin/env bash
# A local drchain testnet from chain-spec/local.json (validators alice, bob, charlie, dave;
# eve is a member that follows the chain without voting).
#
#   scripts/testnet.sh start [N]   build the release binary if needed and start N nodes
#                                  (default 4: the validators; 5 adds eve); print RPC URLs
#   scripts/testnet.sh stop        stop every node (SIGTERM, then SIGKILL after 10 s)
#   scripts/testnet.sh status      which nodes run, and the chain as node 1 sees it
#   scripts/testnet.sh logs NODE   follow a node's log (NODE: alice, bob, ... or 1..5)
#   scripts/testnet.sh clean       stop, then remove .testnet/ (databases, keys, logs)
#
# Node i (from 0) listens on p2p 30333+i, JSON-RPC 9944+i, Prometheus 9615+i (and, with an
# agent config, health endpoints on 8008+i), all on 127.0.0.1. Dev keys are well known:
# never use them outside a local test network.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.testnet
BIN=target/release/drchain
NAMES=(alice bob charlie dave eve)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

build() {
  if [ ! -x "$BIN" ] || [ -n "$(find node runtime pallets chain-spec Cargo.toml Cargo.lock -newer "$BIN" -print -quit)" ]; then
    # On a fresh machine: clang/libclang-dev for RocksDB (installed, or one clear message).
    scripts/prerequisites.sh build
    echo "building $BIN (release; the first build takes a while)..."
    cargo build --release --locked -p drchain-node
  fi
}

pid_of() { # NAME -> pid if running
  local f="$DIR/$1/pid"
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

name_of() { # alice | 1..5 -> name
  case "$1" in
    [1-5]) echo "${NAMES[$(($1 - 1))]}" ;;
    *) for n in "${NAMES[@]}"; do [ "$n" = "$1" ] && { echo "$n"; return; }; done
       echo "unknown node '$1' (one of: ${NAMES[*]} or 1..5)" >&2; return 1 ;;
  esac
}

start() {
  local count="${1:-4}"
  if ! [[ "$count" =~ ^[1-5]$ ]]; then
    echo "error: N must be between 1 and 5 (the local spec has 4 validators and 1 member)" >&2
    exit 1
  fi
  if [ "$count" -lt 3 ]; then
    echo "warning: 4 validators need 3 online to finalize; with $count nodes the chain will not advance" >&2
  fi
  build
  mkdir -p "$DIR"
  # Each node is given one bootnode (alice's; bob's for alice) and finds the other members
  # through it (peer exchange).
  local bootnodes=() i
  for ((i = 0; i < count; i++)); do
    local name=${NAMES[$i]}
    mkdir -p "$DIR/$name"
    [ -f "$DIR/$name/node.key" ] || "$BIN" key generate --dev "$name" --out "$DIR/$name/node.key" 2>/dev/null
    bootnodes+=("/ip4/127.0.0.1/tcp/$((30333 + i))/p2p/$("$BIN" key inspect --peer-id "$DIR/$name/node.key")")
  done
  # The nodes share this machine: give each its share of the cores (at least one thread).
  local cores threads
  cores=$(nproc 2>/dev/null || echo 2)
  threads=$(( cores / count )); [ "$threads" -ge 1 ] || threads=1
  for ((i = 0; i < count; i++)); do
    local name=${NAMES[$i]}
    if pid=$(pid_of "$name"); then
      echo "$name already runs (pid $pid)"
      continue
    fi
    local boot=()
    if [ "$i" -gt 0 ]; then
      boot=(--bootnodes "${bootnodes[0]}")
    elif [ "$count" -gt 1 ]; then
      boot=(--bootnodes "${bootnodes[1]}")
    fi
    local validator=(--validator)
    [ "$name" = eve ] && validator=()
    # A node with .testnet/<name>/agent.toml runs the failover agent (scripts/demo-failover.sh
    # writes them); its health endpoints are on 8008+i.
    local agent=()
    [ -f "$DIR/$name/agent.toml" ] && agent=(--agent-config "$DIR/$name/agent.toml" --health-port $((8008 + i)))
    nohup "$BIN" run --chain local --name "$name" "${validator[@]}" \
      --base-path "$DIR/$name" --node-key-file "$DIR/$name/node.key" \
      --port $((30333 + i)) --rpc-port $((9944 + i)) --prometheus-port $((9615 + i)) \
      --worker-threads "$threads" "${agent[@]}" "${boot[@]}" \
      >> "$DIR/$name/node.log" 2>&1 &
    echo $! > "$DIR/$name/pid"
  done
  # Wait until node 1 answers and has finalized a block, or a node died.
  local rpc="http://127.0.0.1:9944" number=""
  for _ in $(seq 1 100); do
    for ((i = 0; i < count; i++)); do
      if ! pid_of "${NAMES[$i]}" >/dev/null; then
        echo "error: ${NAMES[$i]} exited; its log ($DIR/${NAMES[$i]}/node.log) ends with:" >&2
        tail -n 15 "$DIR/${NAMES[$i]}/node.log" >&2
        exit 1
      fi
    done
    number=$(curl -s -m 1 -H 'Content-Type: application/json' \
      -d '{"jsonrpc":"2.0","id":1,"method":"chain_getHeader"}' "$rpc" 2>/dev/null |
      sed -n 's/.*"number":"\(0x[0-9a-f]*\)".*/\1/p') || true
    if [ -n "$number" ] && [ "$((number))" -gt 0 ]; then break; fi
    sleep 0.2
  done
  for ((i = 0; i < count; i++)); do
    printf '%-8s pid %-7s rpc http://127.0.0.1:%d  ws://127.0.0.1:%d  metrics http://127.0.0.1:%d/metrics  log %s\n' \
      "${NAMES[$i]}" "$(cat "$DIR/${NAMES[$i]}/pid")" $((9944 + i)) $((9944 + i)) $((9615 + i)) "$DIR/${NAMES[$i]}/node.log"
  done
  if [ -n "$number" ] && [ "$((number))" -gt 0 ]; then
    echo "finalizing: block #$((number)) on alice"
  elif [ "$count" -ge 3 ]; then
    echo "warning: no block finalized yet; see the logs" >&2
  fi
  echo "try: $BIN status    or    curl -s -H 'Content-Type: application/json' -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"failover_services\"}' http://127.0.0.1:9944"
}

stop() {
  local stopped=0 name pid
  for name in "${NAMES[@]}"; do
    if pid=$(pid_of "$name"); then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
      echo "stopped $name (pid $pid)"
      stopped=1
    fi
    rm -f "$DIR/$name/pid"
  done
  [ "$stopped" = 1 ] || echo "no node runs"
}

status() {
  local name pid any=0 i=0
  for name in "${NAMES[@]}"; do
    if pid=$(pid_of "$name"); then
      printf '%-8s running (pid %s) rpc http://127.0.0.1:%d\n' "$name" "$pid" $((9944 + i))
      any=1
    elif [ -d "$DIR/$name" ]; then
      printf '%-8s stopped\n' "$name"
    fi
    i=$((i + 1))
  done
  if [ "$any" = 1 ]; then
    echo
    "$BIN" status --rpc http://127.0.0.1:9944 || true
  elif [ ! -d "$DIR" ]; then
    echo "no testnet (start one: scripts/testnet.sh start)"
  fi
}

logs() {
  [ -n "${1:-}" ] || { echo "usage: scripts/testnet.sh logs NODE" >&2; exit 1; }
  local name; name=$(name_of "$1")
  [ -f "$DIR/$name/node.log" ] || { echo "no log for $name ($DIR/$name/node.log)" >&2; exit 1; }
  tail -n 100 -f "$DIR/$name/node.log"
}

case "${1:-}" in
  start) start "${2:-4}" ;;
  stop) stop ;;
  status) status ;;
  logs) logs "${2:-}" ;;
  clean) stop >/dev/null; rm -rf "$DIR"; echo "removed $DIR" ;;
  *) usage; exit 1 ;;
esac

#!/usr/bin/env bash
# The story of drchain in one run: a local testnet protects `demo-db` on alice, bob and charlie
# (a small HTTP server per node stands in for the database); clients go through
# `drchain proxy` on 127.0.0.1:5432. We show who is active, kill that node's machine (node and
# service, kill -9), and watch the chain elect the next one and the proxy follow it.
#
#   scripts/demo-failover.sh          run the story (leaves the testnet running)
#   scripts/testnet.sh stop           stop the nodes afterwards (the demo's services and
#                                     proxy stop with:  scripts/demo-failover.sh stop)
#
# Needs curl and python3 (for the stand-in service).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.testnet
BIN=target/release/drchain
CANDIDATES=(alice bob charlie)
PORTS=(15432 15433 15434)   # demo-db's endpoints in chain-spec/local.json
PROXY=127.0.0.1:5432

stop_demo() {
  for f in "$DIR"/demo/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

if [ "${1:-}" = stop ]; then
  stop_demo
  scripts/testnet.sh stop
  exit 0
fi

command -v python3 >/dev/null || { echo "error: the demo's stand-in service needs python3" >&2; exit 1; }
command -v curl >/dev/null || { echo "error: the demo needs curl" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
rpc() { curl -s -H 'Content-Type: application/json' -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":${2:-[]}}" http://127.0.0.1:9944; }
ask() { curl -s -m 1 "http://$PROXY/role" 2>/dev/null || true; }

stop_demo
# A fresh chain each time: the story starts at genesis.
scripts/testnet.sh clean >/dev/null 2>&1 || true
mkdir -p "$DIR/demo"

say "A stand-in service on each candidate (serves /role: the node and its epoch while active)"
for i in 0 1 2; do
  name=${CANDIDATES[$i]}
  www="$DIR/demo/$name"
  mkdir -p "$www" "$DIR/$name"
  rm -f "$www/role"
  python3 -m http.server "${PORTS[$i]}" --bind 127.0.0.1 --directory "$www" >/dev/null 2>&1 &
  echo $! > "$DIR/demo/$name.pid"
  cat > "$DIR/$name/agent.toml" <<TOML
# written by scripts/demo-failover.sh
[[service]]
name = "demo-db"
on_promote = "echo \"$name epoch \$DRCHAIN_EPOCH\" > $PWD/$www/role"
on_demote = "rm -f $PWD/$www/role"
on_role_change = "echo \"\$(date +%T.%N | cut -c1-12) \$DRCHAIN_ROLE epoch \$DRCHAIN_EPOCH\" >> $PWD/$DIR/demo/$name.roles"
[service.health_check]
kind = "http"
url = "http://127.0.0.1:${PORTS[$i]}/"
interval_ms = 200
TOML
  echo "$name: http://127.0.0.1:${PORTS[$i]}  agent config $DIR/$name/agent.toml"
done

say "Start the testnet (4 validators; alice, bob, charlie run the failover agent)"
scripts/testnet.sh start

say "Start the proxy: clients connect to $PROXY, it routes to whoever the chain says is active"
"$BIN" proxy --service demo-db --listen "$PROXY" --rpc ws://127.0.0.1:9947 >> "$DIR/demo/proxy.log" 2>&1 &
echo $! > "$DIR/demo/proxy.pid"

answer=""
for _ in $(seq 1 100); do answer=$(ask); [ -n "$answer" ] && [[ "$answer" != *"404"* ]] && break; sleep 0.1; done
say "Who is active"
"$BIN" status
echo "through the proxy: $answer"
active=${answer%% *}
for i in 0 1 2; do
  printf '%-8s GET /primary?service=demo-db -> %s\n' "${CANDIDATES[$i]}" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((8008 + i))/primary?service=demo-db")"
done

say "kill -9 $active (its node and its service: the machine died)"
kill -9 "$(cat "$DIR/$active/pid")"
kill "$(cat "$DIR/demo/$active.pid")"
start=$(date +%s%N)
while :; do
  answer=$(ask)
  if [ -n "$answer" ] && [[ "$answer" != "$active "* ]] && [[ "$answer" != *"404"* ]]; then break; fi
  sleep 0.02
done
took=$(( ($(date +%s%N) - start) / 1000000 ))
echo "through the proxy after ${took} ms: $answer"

say "The takeover on chain"
"$BIN" status || true
say "The failover history (failover_history)"
rpc failover_history '["demo-db"]' | python3 -m json.tool | grep -E '"(sequence|block|type|node|epoch|reason|previous)"' || true
say "Role changes the agents' hooks saw"
for name in "${CANDIDATES[@]}"; do
  [ -f "$DIR/demo/$name.roles" ] && sed "s/^/$name  /" "$DIR/demo/$name.roles"
done
echo
echo "The testnet keeps running without $active. Bring it back:  (python3 -m http.server ...) and scripts/testnet.sh start"
echo "Stop everything:  scripts/demo-failover.sh stop"

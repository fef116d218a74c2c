#!/usr/bin/env bash
# The story of drchain in one run: a local testnet protects `demo-db` on alice, bob and charlie
# (a small HTTP server per node stands in for the database's network side; its data is a real
# SQLite file that a client adds rows to, replicated by the agents); clients go through
# `drchain proxy` on 127.0.0.1:5432. We show who is active, kill that node's machine (node and
# service, kill -9), watch the chain elect the next one and the proxy follow it, and count
# the rows the new active has and how many of the last writes the RPO let go.
#
#   scripts/demo-failover.sh          run the story (leaves the testnet running)
#   scripts/testnet.sh stop           stop the nodes afterwards (the demo's services and
#                                     proxy stop with:  scripts/demo-failover.sh stop)
#
# Needs curl, python3 (for the stand-in service) and sqlite3 (the data).
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
command -v sqlite3 >/dev/null || { echo "error: the demo's data is SQLite: apt install sqlite3" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
rpc() { curl -s -H 'Content-Type: application/json' -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":${2:-[]}}" http://127.0.0.1:9944; }
ask() { curl -s -m 1 "http://$PROXY/role" 2>/dev/null || true; }

stop_demo
# A fresh chain each time: the story starts at genesis.
scripts/testnet.sh clean >/dev/null 2>&1 || true
mkdir -p "$DIR/demo"

say "A stand-in service on each candidate (serves /role: the node and its epoch while active; data: data/db.sqlite)"
for i in 0 1 2; do
  name=${CANDIDATES[$i]}
  www="$DIR/demo/$name"
  data="$PWD/$DIR/demo/$name-data"
  mkdir -p "$www" "$DIR/$name" "$data"
  rm -f "$www/role"
  python3 -m http.server "${PORTS[$i]}" --bind 127.0.0.1 --directory "$www" >/dev/null 2>&1 &
  echo $! > "$DIR/demo/$name.pid"
  cat > "$DIR/$name/agent.toml" <<TOML
# written by scripts/demo-failover.sh
[[service]]
name = "demo-db"
# Start from the checkpoint this node's replica shows (none at the very first election),
# unless this node's own data is newer than any checkpoint (it produced the latest one).
on_promote = "if [ \"\$DRCHAIN_KEEP_DATA\" != 1 ] && [ -n \"\$DRCHAIN_CHECKPOINT_PATH\" ]; then cp \$DRCHAIN_CHECKPOINT_PATH/db.sqlite $data/db.tmp && mv $data/db.tmp $data/db.sqlite; fi; echo \"$name epoch \$DRCHAIN_EPOCH checkpoint \$DRCHAIN_CHECKPOINT\" > $PWD/$www/role"
on_demote = "rm -f $PWD/$www/role"
on_role_change = "echo \"\$(date +%T.%N | cut -c1-12) \$DRCHAIN_ROLE epoch \$DRCHAIN_EPOCH\" >> $PWD/$DIR/demo/$name.roles"
[service.health_check]
kind = "http"
url = "http://127.0.0.1:${PORTS[$i]}/"
interval_ms = 200
[service.replication]
source = "$data"
snapshot_command = "sqlite3 -cmd '.timeout 5000' \$DRCHAIN_SOURCE/db.sqlite \".backup '\$1/db.sqlite'\""
target = "$PWD/$DIR/demo/$name-replica"
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

say "A client adds a row every 50 ms to the active node's database (logged once committed)"
(
  n=1
  while :; do
    who=$(ask); who=${who%% *}
    if [ -n "$who" ] && [[ "$who" != *"<"* ]] && \
      sqlite3 -cmd '.timeout 2000' "$DIR/demo/$who-data/db.sqlite" \
        "create table if not exists t(id integer primary key, at text); insert into t values($n, '$(date +%T.%N)');" 2>/dev/null; then
      echo "$n $who $(date +%s%3N)" >> "$DIR/demo/writes.log"
      n=$((n + 1))
    fi
    sleep 0.05
  done
) &
echo $! > "$DIR/demo/writer.pid"
rm -f "$DIR/demo/writes.log"
sleep 4
echo "rows written so far: $(wc -l < "$DIR/demo/writes.log")"
"$BIN" status | sed -n '/service demo-db/,$p'
for i in 0 1 2; do
  printf '%-8s GET /primary?service=demo-db -> %s\n' "${CANDIDATES[$i]}" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((8008 + i))/primary?service=demo-db")"
done

say "kill -9 $active (its node and its service: the machine died)"
kill -9 "$(cat "$DIR/$active/pid")"
kill "$(cat "$DIR/demo/$active.pid")"
killed_ms=$(date +%s%3N)
start=$(date +%s%N)
while :; do
  answer=$(ask)
  if [ -n "$answer" ] && [[ "$answer" != "$active "* ]] && [[ "$answer" != *"404"* ]]; then break; fi
  sleep 0.02
done
took=$(( ($(date +%s%N) - start) / 1000000 ))
echo "through the proxy after ${took} ms: $answer"
sleep 1
kill "$(cat "$DIR/demo/writer.pid")" 2>/dev/null || true

say "The data: what the new active started from, and what the RPO let go"
new=${answer%% *}
replica="$DIR/demo/$new-replica/db.sqlite"
kept=$(sqlite3 "$replica" "select count(*) from t" 2>/dev/null || echo 0)
acked_by_old=$(awk -v a="$active" '$2 == a' "$DIR/demo/writes.log" | wc -l)
lost=$(awk -v a="$active" -v k="$kept" '$2 == a && $1 > k' "$DIR/demo/writes.log" | wc -l)
oldest_lost=$(awk -v a="$active" -v k="$kept" '$2 == a && $1 > k {print $3; exit}' "$DIR/demo/writes.log")
echo "$new started from $(cat "$DIR/demo/$new/role" 2>/dev/null | sed 's/.*checkpoint/checkpoint/') holding rows 1..$kept"
echo "the client had $acked_by_old rows acknowledged by $active; lost: $lost$( [ -n "$oldest_lost" ] && echo " (written in the last $((killed_ms - oldest_lost)) ms before the kill; the RPO is max_lag_ms = 1000)")"
echo "rows $new holds now (writes continued there): $(sqlite3 "$DIR/demo/$new-data/db.sqlite" "select count(*) from t")"

say "The takeover on chain"
"$BIN" status || true
say "The failover history (failover_history)"
rpc failover_history '["demo-db"]' | python3 -m json.tool | grep -E '"(sequence|block|type|node|epoch|reason|previous)"' || true
say "Role changes the agents' hooks saw"
for name in "${CANDIDATES[@]}"; do
  [ -f "$DIR/demo/$name.roles" ] && sed "s/^/$name  /" "$DIR/demo/$name.roles"
done
echo
echo "Restore the checkpoint anywhere:  $BIN restore --service demo-db --out /tmp/demo-db-restored"
echo "The testnet keeps running without $active. Bring it back:  (python3 -m http.server ...) and scripts/testnet.sh start"
echo "Stop everything:  scripts/demo-failover.sh stop"

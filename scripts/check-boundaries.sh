#!/usr/bin/env bash
# The layers that must stay pure (design brief, "Boundaries that must hold"):
# - the runtime and the pallets: no async runtime, network, database or RPC server in their
#   dependency tree; they are deterministic;
# - the consensus crate: the same, so the simulation runs the code a node runs;
# - the replication crate: chunking, store and manifests stay testable without a runtime;
# - the agent's role state machine: no tokio (its loop executes what the machine decides).
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|libp2p[a-z0-9-]*|rocksdb|librocksdb-sys|jsonrpsee[a-z0-9-]*|mio|hyper) '
status=0
for crate in drchain-consensus drchain-replication drchain-runtime drchain-support pallet-membership \
             pallet-service-status pallet-network-config pallet-checkpoints pallet-failover; do
  # libp2p-identity is key and peer-id types only (Malachite's core types name peers by it).
  hits=$(cargo tree -p "$crate" -e normal --prefix none --locked | sort -u | grep -E "$forbidden" \
    | grep -v '^libp2p-identity ' || true)
  if [ -n "$hits" ]; then
    echo "$crate depends on I/O crates it must not use:"
    echo "$hits"
    status=1
  fi
done
machine_files=$(ls agent/src/machine.rs agent/src/machine/*.rs 2>/dev/null || true)
if hits=$(grep -nE '\btokio\b' $machine_files); then
  echo "the agent's state machine must not use tokio:"
  echo "$hits"
  status=1
fi
[ $status -eq 0 ] && echo "consensus, replication, runtime and pallets are free of tokio, libp2p, rocksdb and jsonrpsee; the agent's state machine of tokio"
exit $status

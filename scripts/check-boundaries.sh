#!/usr/bin/env bash
# The runtime and the pallets must stay pure: no async runtime, network, database or RPC
# server in their dependency tree (design brief, "Boundaries that must hold").
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|libp2p[a-z0-9-]*|rocksdb|librocksdb-sys|jsonrpsee[a-z0-9-]*|mio|hyper) '
status=0
for crate in drchain-runtime drchain-support pallet-membership pallet-service-status \
             pallet-network-config pallet-checkpoints pallet-failover; do
  hits=$(cargo tree -p "$crate" -e normal --prefix none --locked | sort -u | grep -E "$forbidden" || true)
  if [ -n "$hits" ]; then
    echo "$crate depends on I/O crates it must not use:"
    echo "$hits"
    status=1
  fi
done
[ $status -eq 0 ] && echo "runtime and pallets are free of tokio, libp2p, rocksdb and jsonrpsee"
exit $status

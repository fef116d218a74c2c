# drchain in a container: a build stage with the Rust toolchain and RocksDB's build needs, a
# small Debian runtime stage with the binary only, run as a non-root user.
#   docker build -t drchain .
#   docker run --rm drchain --help
# deploy/docker-compose.yml runs a 4-validator network with Prometheus and Grafana.

# The toolchain the tests run with (the dependencies need 1.91 or newer).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p drchain-node \
 && install -m 0755 target/release/drchain /usr/local/bin/drchain

FROM debian:bookworm-slim
# ca-certificates for HTTPS RPC peers; tini reaps hook processes and forwards SIGTERM.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/drchain --create-home --shell /usr/sbin/nologin drchain
COPY --from=build /usr/local/bin/drchain /usr/bin/drchain
COPY chain-spec/ /usr/share/drchain/chain-spec/
USER drchain
WORKDIR /var/lib/drchain
VOLUME ["/var/lib/drchain"]
# p2p, checkpoint pushes (with --push-port 30343), JSON-RPC and the dashboard, Prometheus
# metrics, health endpoints
EXPOSE 30333 30343 9944 9615 8008
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/drchain"]
CMD ["--help"]

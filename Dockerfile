# pinion container image: `docker build -t pinion .`
# Run: docker run -p 443:8443 -p 127.0.0.1:9900:9900 -v "$PWD/conf:/etc/pinion:ro" \
#        --stop-timeout 50 pinion
# The configuration (and the certificates it names) is mounted at /etc/pinion; `make example`
# generates the example's in conf/certs/.

# --- build stage: OpenSSL is vendored and compiled from source, zlib-ng needs cmake ---------
# The binary is profile-guided like `make release` (scripts/release.sh): its training run needs
# nginx, wrk, h2load and curl on the build stage's loopback (the script adds rustup's llvm-tools).
FROM rust:1-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake perl make openssl nginx wrk nghttp2-client curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY vendor ./vendor
# `pinion demo --write-config` writes the example, built into the binary.
COPY conf/pinion.yaml ./conf/pinion.yaml
COPY scripts ./scripts
RUN scripts/release.sh \
 && strip target/release/pinion

# --- runtime stage ----------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the system trust store for pools without pins or `ca`;
# curl: the HEALTHCHECK below.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin pinion \
 && mkdir -p /run/pinion \
 && chown pinion /run/pinion
COPY --from=build /src/target/release/pinion /usr/local/bin/pinion
COPY conf/pinion.yaml /etc/pinion/pinion.yaml
USER 10001
VOLUME ["/etc/pinion"]
# 8443: HTTPS listener of the example configuration; 9900: admin listener (keep it private).
EXPOSE 8443 9900
# The admin listener must be enabled (admin.bind) for this check; 503 while draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:9900/healthz"]
# SIGTERM drains: /healthz answers 503 for grace_period_seconds while requests are served,
# then in-flight requests get graceful_shutdown_timeout_seconds. Give docker stop that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pinion"]
CMD ["-c", "/etc/pinion/pinion.yaml"]

# syntax=docker/dockerfile:1
# One image with the four Carrier services and the operator CLI: carrier-ingress,
# carrier-router, carrier-delivery, carrier-notifier, carrierctl (the setup steps `carrierctl
# admin topics ensure` / `admin migrate`, and `kubectl exec` into any pod). No ENTRYPOINT: the
# container's command picks the binary (docker-compose.yml, helm/carrier).
#
#   docker build -t carrier:0.1.0 .            # BuildKit (the default builder since Docker 23)
#
# The build caches Cargo's registry and target directory across builds (--mount=type=cache),
# so a rebuild after a source change compiles only Carrier's crates.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The rust image (buildpack-deps) has the C toolchain, make and zlib that librdkafka's bundled
# build needs; protoc comes from the protoc-bin-vendored crate. librdkafka links Debian's OpenSSL
# (Kafka TLS, SCRAM) and libcurl (OAUTHBEARER/OIDC): their -dev packages here, the libraries in
# the runtime stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
# The commit `--version` and carrier_build_info report: docker build --build-arg
# CARRIER_BUILD_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG CARRIER_BUILD_COMMIT=unknown
ENV CARRIER_BUILD_COMMIT=${CARRIER_BUILD_COMMIT}
COPY . .
RUN --mount=type=cache,id=carrier-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=carrier-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=carrier-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
        -p carrier-ingress -p carrier-router -p carrier-delivery -p carrier-notifier -p carrierctl \
    && mkdir -p /out \
    && cp target/release/carrier-ingress target/release/carrier-router \
          target/release/carrier-delivery target/release/carrier-notifier \
          target/release/carrierctl /out/

FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="Carrier" \
      org.opencontainers.image.description="Ordered, durable delivery of healthcare event notifications: ingress, router, delivery, notifier and carrierctl" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md, docs/production.md"
# ca-certificates: the system roots, for TLS clients that read them; libssl3 and libcurl4:
# librdkafka's TLS and OIDC.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The container health check of docker-compose.yml (bash /dev/tcp; no curl in the image).
COPY deploy/carrier-healthcheck /usr/local/bin/carrier-healthcheck
# 65532: the "nonroot" user of distroless images; the Helm chart runs as it too (runAsUser).
USER 65532:65532
ENV CARRIER_LOG_FORMAT=json
# glibc gives each busy thread a malloc arena of its own, and freed memory stays spread over
# them; two arenas per process keep delivery's peak under 2x its idle size (1,000,000 parked:
# 56.6 -> 49.7 MiB; docs/benchmarks.md "Delivery memory, where it goes").
ENV MALLOC_ARENA_MAX=2
# Public API, admin (/healthz, /readyz, /metrics), router gRPC, delivery control gRPC.
EXPOSE 8080 9080 50051 50052

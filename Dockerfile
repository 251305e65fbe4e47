# syntax=docker/dockerfile:1
# tokengate container image: built with the Rust toolchain, run from a distroless image
# (glibc, CA certificates, no shell) as the non-root user 65532.
#   docker build -t tokengate:0.1.0 .
# The Helm chart (helm/tokengate) runs it with `serve --config /etc/tokengate/tokengate.yaml`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# aws-lc-sys needs only the C compiler the image has. The caches keep rebuilds quick.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tokengate \
    && install -D -m 0755 target/release/tokengate /out/tokengate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tokengate /usr/local/bin/tokengate
USER 65532:65532
# 8080: the gateway; 9090: /metrics, /healthz, /readyz (admin.listen must be 0.0.0.0:9090 to
# reach it from outside the container; the chart sets it).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tokengate"]
CMD ["serve", "--config", "/etc/tokengate/tokengate.yaml"]

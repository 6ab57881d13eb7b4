# syntax=docker/dockerfile:1
# Build: docker build -t ghcr.io/example/gpu-slicer:0.1.0 .   (BuildKit, the default builder)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target/ between builds; the binary is copied out
# of the cached target/ because cache mounts are not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gpu-slicer \
 && install -D -m 0755 target/release/gpu-slicer /out/gpu-slicer

# glibc + libgcc, no shell; runs as nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gpu-slicer /gpu-slicer
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/gpu-slicer"]
CMD ["serve"]

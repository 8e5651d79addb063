# syntax=docker/dockerfile:1
#
# popup-operator image: a static musl binary on distroless/static (nonroot).
# The same image runs the operator (`run`), the simulator Job and the native
# processor pods (the operator passes its own image as POPUP_SELF_IMAGE).
#
#   docker build -t ghcr.io/popup-operator/popup-operator:0.1.0 .
#
# Builds natively for the build platform (amd64 -> x86_64-unknown-linux-musl,
# arm64 -> aarch64-unknown-linux-musl).

ARG RUST_VERSION=1.95

############################ builder ############################
FROM rust:${RUST_VERSION}-bookworm AS builder

# musl-gcc for C code in dependencies (ring).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*

RUN echo "$(uname -m)-unknown-linux-musl" > /rust-target \
 && rustup target add "$(cat /rust-target)"

WORKDIR /src

# 1) Dependency layer: only the manifests, with stub sources, so that this layer
#    (and the downloaded crates) stay cached until Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo fetch --locked --target "$(cat /rust-target)"

# 2) Build the real sources (the whole context minus .dockerignore, so that
#    include_str!/include_bytes! assets outside src/ are available).
COPY . .
# The crates come from the layer above (hence --offline); the BuildKit cache
# mount keeps compiled dependencies between builds, so the binary is copied out
# of the cached target dir.
RUN --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && touch src/main.rs src/lib.rs \
 && cargo build --release --locked --offline --target "$target" --bin popup-operator \
 && install -D -m 0755 "target/$target/release/popup-operator" /out/popup-operator

############################ runtime ############################
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="popup-operator" \
      org.opencontainers.image.description="Kubernetes operator for PopUpStore flash-sale demos" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/popup-operator /popup-operator

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/popup-operator"]
CMD ["run"]

# syntax=docker/dockerfile:1
#
# mnist-api: a two-stage build. The builder compiles the server with the official Rust image
# on Debian bookworm; the runtime is debian:bookworm-slim (same glibc), running as a non-root
# user, with the committed weights baked in and the users file on a volume (/data).
#
#   docker build -t mnist-api:0.1.0 .
#   docker run --rm -p 8080:8080 -v mnist-users:/data -e SECRET_KEY="$(openssl rand -hex 32)" mnist-api:0.1.0
#
# The first start with an empty /data creates /data/users.json with one user, `admin`, and
# prints its random password once in the container log (`docker logs …`). More users:
#   docker run --rm -it -v mnist-users:/data mnist-api:0.1.0 user add alice

# Rust 1.89 is the oldest the locked dependencies accept (tests/deploy.rs checks this via
# `cargo metadata`); the repository is developed and tested with 1.95.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Leaner release binary than the repository's profile: no line tables, symbols stripped
# (~13 MB instead of ~130 MB). Panics still print their message, without file:line frames.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

# 1. Dependencies only: the manifest and lock with stub targets, so this slow layer is
#    rebuilt only when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    mkdir -p src train benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > train/main.rs \
 && echo 'fn main() {}' > benches/inference.rs \
 && echo 'fn main() {}' > benches/training_step.rs \
 && cargo build --release --locked --bin mnist-api \
 && rm -rf src train benches

# 2. The real sources. `touch` makes them newer than the stub build, whatever mtimes COPY kept.
COPY src src
COPY train train
COPY benches benches
COPY assets assets
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch src/main.rs src/lib.rs train/main.rs \
 && cargo build --release --locked --bin mnist-api \
 && cp target/release/mnist-api /usr/local/bin/mnist-api

FROM debian:bookworm-slim AS runtime
# No packages added: the binary needs only glibc and libgcc_s, and the health check below
# uses bash's /dev/tcp, so the image has no curl or wget.
RUN groupadd --system --gid 10001 mnist \
 && useradd --system --uid 10001 --gid mnist --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin mnist \
 && mkdir -p /data \
 && chown mnist:mnist /data
COPY --from=build /usr/local/bin/mnist-api /usr/local/bin/mnist-api
COPY weights/mnist_cnn.safetensors /app/weights/mnist_cnn.safetensors
WORKDIR /app

# The server's own defaults suit a laptop (127.0.0.1, files in the working directory); in a
# container it must listen on every interface and keep users where they can be written.
ENV MNIST_API_BIND=0.0.0.0:8080 \
    MNIST_API_WEIGHTS=/app/weights/mnist_cnn.safetensors \
    MNIST_API_USERS=/data/users.json

USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]

# GET /health over HTTP/1.0 with bash's /dev/tcp; healthy when the status line says 200.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# The server handles SIGTERM itself (stops accepting, finishes requests in flight, flushes
# spans), so it runs as PID 1 without an init. Arguments go to mnist-api: `user add alice`.
ENTRYPOINT ["mnist-api"]

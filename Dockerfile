# The prosaas-calls image: one replica per container, configured by environment (docs/reference.md), drained
# on SIGTERM. Built in two stages: a Rust builder, then a slim Debian runtime with a non-root user.

# rust-version in Cargo.toml (and the highest of the locked dependencies) is 1.88.
FROM rust:1.88-bookworm AS builder
WORKDIR /build
# A failure anywhere in a RUN's pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Dependencies in their own layer: build against stub sources with only the manifests copied, so a
# change to a crate's sources rebuilds the workspace's crates alone. Every target a manifest names
# (the simulator's binary, the admission bench, the integration tests) gets a stub too.
COPY Cargo.toml Cargo.lock ./
COPY crates/twilio/Cargo.toml crates/twilio/
COPY crates/twilio-api/Cargo.toml crates/twilio-api/
COPY crates/calls-core/Cargo.toml crates/calls-core/
COPY crates/sim/Cargo.toml crates/sim/
COPY crates/testkit/Cargo.toml crates/testkit/
RUN for dir in . crates/twilio crates/twilio-api crates/calls-core crates/sim crates/testkit; do \
        mkdir -p "$dir/src" && touch "$dir/src/lib.rs"; \
    done \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > crates/sim/src/main.rs \
    && mkdir -p crates/calls-core/benches tests/it \
    && echo 'fn main() {}' > crates/calls-core/benches/admission.rs \
    && echo 'fn main() {}' > crates/calls-core/benches/memory_admission.rs \
    && echo 'fn main() {}' > crates/calls-core/benches/renewal.rs \
    && echo 'fn main() {}' > crates/calls-core/benches/waiting_room.rs \
    && touch tests/it/main.rs \
    && cargo build --release --locked -p prosaas-calls \
    && rm -rf src crates tests

# The commit `prosaas_calls_build_info` reports: the build context has no .git, so pass it
# (`--build-arg PROSAAS_CALLS_COMMIT=$(git rev-parse --short=12 HEAD)`); build.rs reads it.
ARG PROSAAS_CALLS_COMMIT=unknown
COPY build.rs ./
COPY src ./src
COPY crates ./crates
COPY tests ./tests
COPY deploy ./deploy
# COPY keeps the sources' older mtimes, which the stub build's fingerprints would count as up to
# date: touch every crate root so cargo rebuilds the real crates. Debug info is stripped from the
# shipped binary (the symbol table stays, so backtraces still name functions).
RUN find src crates \( -name lib.rs -o -name main.rs \) -exec touch {} + \
    && cargo build --release --locked -p prosaas-calls \
    && strip --strip-debug -o /build/prosaas-calls target/release/prosaas-calls

FROM debian:bookworm-slim AS runtime
# No packages added: rediss:// uses rustls with compiled-in web PKI roots, and the health check
# below uses bash, which the slim image already has.
RUN groupadd --system --gid 10001 calls \
    && useradd --system --uid 10001 --gid calls --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin calls
COPY --from=builder /build/prosaas-calls /usr/local/bin/prosaas-calls

ENV PORT=8080
EXPOSE 8080
USER 10001:10001

# Liveness over bash's /dev/tcp: the image has no curl or wget, and adding one (with its TLS and
# library dependencies) only for a loopback GET is more to patch than it is worth. Follows PORT;
# an image run with LISTEN_ADDR on another port needs its own check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-8080} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM starts the drain (no new calls, live ones finish up to DRAIN_TIMEOUT_SECS, then exit 0);
# give the container a stop timeout longer than that (docker-compose.prod.yml: stop_grace_period;
# Kubernetes: terminationGracePeriodSeconds). The binary is PID 1, so the signal reaches it directly.
# Kubernetes ignores HEALTHCHECK and probes /healthz and /readyz itself; the user, port, stop signal
# and health path here are checked against deploy/kubernetes by scripts/check-kubernetes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/prosaas-calls"]

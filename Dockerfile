# velocity-auth in a container: build with the Rust toolchain, run the one
# binary on a small Debian as an unprivileged user. Not built in this
# repository's CI (no image can be pulled there): see docs/deployment.md.

FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the versions in Cargo.lock. Without .git in the build
# context (see .dockerignore), `--version` says `commit unknown`.
RUN cargo build --release --locked --bin velocity-auth

FROM debian:bookworm-slim
# A fixed uid, so a volume's owner is predictable across rebuilds.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/velocity-auth velocity \
    && mkdir -p /var/lib/velocity-auth \
    && chown velocity:velocity /var/lib/velocity-auth
COPY --from=build /src/target/release/velocity-auth /usr/local/bin/velocity-auth
USER velocity
WORKDIR /var/lib/velocity-auth
# The SQLite file, when DATABASE_URL is not a PostgreSQL URL.
VOLUME ["/var/lib/velocity-auth"]
ENV DATABASE_URL=sqlite:///var/lib/velocity-auth/velocity-auth.db \
    VELOCITY_GRPC_ADDR=0.0.0.0:50051 \
    VELOCITY_HTTP_ADDR=0.0.0.0:8080
EXPOSE 50051 8080
# Probes: GET /healthz (alive) and GET /readyz (ready for traffic).
ENTRYPOINT ["/usr/local/bin/velocity-auth"]

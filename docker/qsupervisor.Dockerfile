# qsupervisor as a static musl binary in an empty image, meant to be copied into worker images:
#
#   COPY --from=qscaler/qsupervisor:0.1.0 /qsupervisor /usr/local/bin/qsupervisor
#   ENTRYPOINT ["/usr/local/bin/qsupervisor", "--"]
#   CMD ["celery", "-A", "app", "worker"]
#
# Build from the repo root: docker build -f docker/qsupervisor.Dockerfile -t qscaler/qsupervisor:0.1.0 .
FROM rust:1.95-alpine AS build
# musl-dev comes from the same Alpine release as the pinned base image.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p qsupervisor --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/qsupervisor /qsupervisor

FROM scratch
COPY --from=build /qsupervisor /qsupervisor
ENTRYPOINT ["/qsupervisor"]

# The operator image: a static musl binary on a distroless base, non-root.
# Build from the repo root: docker build -f docker/operator.Dockerfile -t qscaler/operator:0.1.0 .
FROM rust:1.95-alpine AS build
# musl-dev comes from the same Alpine release as the pinned base image.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p qscaler-operator --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/qscaler-operator /qscaler-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /qscaler-operator /qscaler-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/qscaler-operator"]

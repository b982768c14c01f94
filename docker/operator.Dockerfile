# The operator image: a static musl qscaler-operator, the CA bundle, nothing else; non-root.
# Build with docker/build.sh (it makes the static binaries and the context; no base image is pulled).
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY qscaler-operator /qscaler-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/qscaler-operator"]

# qsupervisor as a static musl binary in an empty image, meant to be copied into worker images:
#
#   COPY --from=qscaler/qsupervisor:0.1.0 /qsupervisor /usr/local/bin/qsupervisor
#   ENTRYPOINT ["/usr/local/bin/qsupervisor", "--"]
#   CMD ["celery", "-A", "app", "worker"]
#
# Build with docker/build.sh (it makes the static binary and the context; no base image is pulled).
FROM scratch
COPY qsupervisor /qsupervisor
ENTRYPOINT ["/qsupervisor"]

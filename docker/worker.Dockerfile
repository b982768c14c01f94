# A small worker image: qsupervisor as the entrypoint and a shell (Debian's busybox-static, with its applets
# linked in /bin), so that a QWorker's command can be `sh -c ...` or any static program.
# Build with docker/build.sh (it makes the static binary and the context; no base image is pulled).
FROM scratch
COPY bin/ /bin/
COPY qsupervisor /usr/local/bin/qsupervisor
ENV PATH=/usr/local/bin:/bin
ENTRYPOINT ["/usr/local/bin/qsupervisor"]

# For the e2e tests only: the worker image plus qscaler-test-worker, a queue worker shaped like Celery/RQ
# (it consumes the queue itself, so qsupervisor runs in wrap mode). Built by `docker/build.sh --test`.
ARG WORKER_IMAGE=qscaler/worker:0.1.0
FROM ${WORKER_IMAGE}
COPY qscaler-test-worker /usr/local/bin/qscaler-test-worker

"""The Celery app of the preset test (`celery --workdir tests/frameworks/python -A celery_app worker`).

Late acks: a running task stays in kombu's `unacked` hash until it ends, so it counts as in flight
(with early acks only the prefetched messages do).
"""

import os

from celery import Celery

import record

app = Celery("presets", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


@app.task(name="presets.work")
def work(task_id: str, seconds: float) -> None:
    record.run(task_id, seconds)

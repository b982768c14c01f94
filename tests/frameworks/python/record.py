"""What every preset test task does: note its start, work, note its end.

The notes go to the Redis list `$EVENTS` as "start <id> <pod>" and "end <id> <pod>" (the e2e tests read
them: a start without an end is a cut task, a second start a task run twice).
"""

import os
import time

import redis


def run(task_id: str, seconds: float) -> None:
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    events, pod = os.environ["EVENTS"], os.environ.get("POD_NAME", "-")
    r.rpush(events, f"start {task_id} {pod}")
    time.sleep(seconds)
    r.rpush(events, f"end {task_id} {pod}")

"""Enqueues preset test tasks with the framework's own client.

    python produce.py rq|celery REDIS_URL QUEUE FIRST COUNT SECONDS [PRIORITY]

Task ids are t<FIRST> .. t<FIRST+COUNT-1>; each runs SECONDS. PRIORITY: Celery's message priority
(kombu keeps it in the queue's priority list for that step).
"""

import os
import sys


def main() -> None:
    framework, url, queue, first, count, seconds = sys.argv[1:7]
    priority = int(sys.argv[7]) if len(sys.argv) > 7 else None
    ids = [f"t{i}" for i in range(int(first), int(first) + int(count))]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if framework == "rq":
        from redis import Redis
        from rq import Queue, Retry

        import rq_tasks

        q = Queue(queue, connection=Redis.from_url(url))
        for i in ids:
            # A retry lets RQ's maintenance run again a job that a worker's stop left in the
            # intermediate list (it fails such a job otherwise).
            q.enqueue(rq_tasks.work, i, float(seconds), retry=Retry(max=2))
    elif framework == "celery":
        os.environ["REDIS_URL"] = url
        import celery_app

        for i in ids:
            celery_app.work.apply_async((i, float(seconds)), queue=queue, priority=priority)
    else:
        sys.exit(f"unknown framework {framework}")


if __name__ == "__main__":
    main()

"""The RQ job of the preset test (`rq worker --path tests/frameworks/python`)."""

import record


def work(task_id: str, seconds: float) -> None:
    record.run(task_id, seconds)

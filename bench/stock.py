"""The stock taskiq-nats pull broker with one no-op task: the baseline of ``bench.tasks``.

Run in the same process tree against the same server as the engine, so a ratio
compares the two brokers and not two machines. taskiq-nats is used here, and
only here (docs/adr/0001-broker.md).
"""

from __future__ import annotations

import os

from taskiq_nats import PullBasedJetStreamBroker

STREAM = "BENCH_STOCK"
SUBJECT = "bench.stock.tasks"
DURABLE = "bench-stock"

broker = PullBasedJetStreamBroker(
    servers=os.environ.get("BENCH_ADMIN_URL", "nats://127.0.0.1:4222").split(","),
    subject=SUBJECT,
    stream_name=STREAM,
    durable=DURABLE,
    pull_consume_batch=int(os.environ.get("BENCH_STOCK_FETCH", "1")),
    pull_consume_timeout=1.0,
)


@broker.task(task_name="bench.stock.noop")
async def noop() -> None:
    """Do nothing: the per-task cost of the stock broker."""

"""The same per-product aggregation written the way a typical Faust user writes it (a benchmark baseline).

``faust.Record`` models, ``group_by(product_id)`` on clicks, order lines forwarded keyed by product,
one windowed table (1-min tumbling, relative to the record timestamp = event time) updated with ``+=``
per event. Run as its own process by ``benchmarks/run.py``::

    NAIVE_BROKER=127.0.0.1:9092 NAIVE_CLICKS=t-clicks NAIVE_ORDERS=t-orders NAIVE_APP_ID=naive-x \
    NAIVE_PROGRESS=/tmp/progress.txt python benchmarks/naive_faust.py

An event counts as done when its table update is made (an order: when its last line's is).
Progress (``<epoch s> <events done>`` lines) goes to ``NAIVE_PROGRESS`` every 0.25 s.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

import faust

BROKER = os.environ["NAIVE_BROKER"]
APP_ID = os.environ.get("NAIVE_APP_ID", "naive-faust")
PROGRESS = os.environ.get("NAIVE_PROGRESS", "naive-progress.txt")


class Click(faust.Record, serializer="json"):
    event_id: str
    ts: int
    user_id: str
    product_id: str
    session_id: str | None = None
    category: str | None = None
    action: str = "view"


class Item(faust.Record, serializer="json"):
    product_id: str
    quantity: int
    unit_price: float
    category: str | None = None
    last: bool = False


class Order(faust.Record, serializer="json"):
    order_id: str
    ts: int
    user_id: str
    items: list[Item]
    currency: str = "EUR"


app = faust.App(APP_ID, broker=",".join(f"kafka://{b}" for b in BROKER.split(",")), store="memory://",
                web_enabled=False, topic_partitions=4, topic_replication_factor=1,
                datadir=os.environ.get("NAIVE_DATA_DIR", f"/tmp/{APP_ID}"))
clicks_topic = app.topic(os.environ["NAIVE_CLICKS"], value_type=Click)
orders_topic = app.topic(os.environ["NAIVE_ORDERS"], value_type=Order)
items_topic = app.topic(f"{APP_ID}-items", value_type=Item, partitions=4)

clicks_per_min = app.Table("clicks_per_min", default=int, partitions=4).tumbling(
    timedelta(minutes=1), expires=timedelta(hours=1)).relative_to_stream()
units_per_min = app.Table("units_per_min", default=int, partitions=4).tumbling(
    timedelta(minutes=1), expires=timedelta(hours=1)).relative_to_stream()

done = 0


@app.agent(clicks_topic)
async def count_clicks(clicks: faust.Stream[Click]) -> None:
    global done
    async for click in clicks.group_by(Click.product_id):
        clicks_per_min[click.product_id] += 1
        done += 1


@app.agent(orders_topic)
async def split_orders(orders: faust.Stream[Order]) -> None:
    async for order in orders:
        for i, item in enumerate(order.items):
            item.last = i == len(order.items) - 1
            await items_topic.send(key=item.product_id, value=item)


@app.agent(items_topic)
async def count_units(items: faust.Stream[Item]) -> None:
    global done
    async for item in items:
        units_per_min[item.product_id] += item.quantity
        if item.last:
            done += 1


@app.timer(interval=0.25)
async def progress() -> None:
    with open(PROGRESS, "a") as fh:
        fh.write(f"{time.time():.3f} {done}\n")


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()

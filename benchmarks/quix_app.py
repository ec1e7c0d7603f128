"""The same per-product aggregation as a typical Quix Streams 3.x app (a benchmark baseline; own process).

Clicks: ``group_by("product_id")``, a 1-min tumbling window ``count()``. Orders: expanded into their
lines, ``group_by("product_id")``, a 1-min tumbling window summing quantities. Timestamps are the
record timestamps (event time, as the load generator sets them). An event counts as done when its
window update is made (an order: its last line's). Progress lines ``<epoch s> <events done>`` go to
``QUIX_PROGRESS`` every 0.25 s. Quix Streams needs topic configs the embedded broker does not report
(``KeyError: 'retention.ms'``), so ``benchmarks/run.py`` runs this on Apache Kafka only.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

from quixstreams import Application

BROKER = os.environ["QUIX_BROKER"]
PROGRESS = os.environ.get("QUIX_PROGRESS", "quix-progress.txt")
done = 0


def _bump(_value: object) -> None:
    global done
    done += 1


def _bump_order(value: dict) -> None:
    global done
    if value.get("last"):
        done += 1


def _lines(order: dict) -> list[dict]:
    items = order["items"]
    return [dict(it, last=i == len(items) - 1) for i, it in enumerate(items)]


def _report() -> None:
    while True:
        with open(PROGRESS, "a") as fh:
            fh.write(f"{time.time():.3f} {done}\n")
        time.sleep(0.25)


def main() -> None:
    app = Application(broker_address=BROKER, consumer_group=os.environ.get("QUIX_GROUP", "quix-bench"),
                      auto_offset_reset="earliest", state_dir=os.environ.get("QUIX_STATE_DIR", "/tmp/quix-state"),
                      loglevel="WARNING")
    clicks = app.topic(os.environ["QUIX_CLICKS"], value_deserializer="json")
    orders = app.topic(os.environ["QUIX_ORDERS"], value_deserializer="json")

    sc = app.dataframe(clicks).group_by("product_id")
    sc = sc.tumbling_window(timedelta(minutes=1)).count().current()
    sc.update(_bump)

    so = app.dataframe(orders).apply(_lines, expand=True).group_by("product_id")
    so = so.update(_bump_order)
    so = so.tumbling_window(timedelta(minutes=1)).reduce(lambda acc, v: acc + v["quantity"],
                                                         lambda v: v["quantity"]).current()
    threading.Thread(target=_report, daemon=True).start()
    app.run()


if __name__ == "__main__":
    main()

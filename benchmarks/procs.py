"""Helper processes of the latency benchmarks (run by ``benchmarks/latency.py``, each in its own process).

    python benchmarks/procs.py receiver --port P --out alerts.jsonl
        a webhook receiver: one JSON line per alert received, with the wall time of receipt
    python benchmarks/procs.py http-load --url URL --rate R --seconds S --out result.json
        GETs at a steady (open-loop) rate; latency counted from each request's scheduled start, so a slow
        answer delays the measurement of the ones behind it instead of hiding them
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web


async def _receiver(port: int, out: str) -> None:
    fh = open(out, "ab", buffering=0)  # noqa: SIM115 - lives as long as the process

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        for a in orjson.loads(body).get("alerts", []):
            fh.write(orjson.dumps({"recv_s": now, "alert": a}) + b"\n")
        return web.Response(text="ok")

    app = web.Application(client_max_size=16 << 20)
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def _http_load(url: str, rate: float, seconds: float, out: str) -> None:
    lat: list[float] = []
    errors = 0

    async def one(session: ClientSession, due: float) -> None:
        nonlocal errors
        try:
            async with session.get(url, timeout=ClientTimeout(total=10)) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
                    return
        except Exception:  # noqa: BLE001 - counted
            errors += 1
            return
        lat.append((time.perf_counter() - due) * 1000)

    async with ClientSession(connector=TCPConnector(limit=64)) as session:
        for _ in range(20):  # warm the connection pool
            await one(session, time.perf_counter())
        lat.clear()
        start = time.perf_counter()
        n = int(rate * seconds)
        tasks = []
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, due)))
        await asyncio.gather(*tasks)
    lat.sort()

    def q(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

    with open(out, "wb") as fh:
        fh.write(orjson.dumps({"requests": n, "ok": len(lat), "errors": errors, "rate": rate,
                               "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": lat[-1] if lat else None}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receiver")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", required=True)
    h = sub.add_parser("http-load")
    h.add_argument("--url", required=True)
    h.add_argument("--rate", type=float, required=True)
    h.add_argument("--seconds", type=float, required=True)
    h.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "receiver":
        asyncio.run(_receiver(a.port, a.out))
    else:
        asyncio.run(_http_load(a.url, a.rate, a.seconds, a.out))


if __name__ == "__main__":
    main()

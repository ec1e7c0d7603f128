"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright) against a
worker on the embedded broker fed generated traffic with an injected surge.

The page is opened before the traffic is sent, so the surge has to arrive over the live event stream
(no reload). The page's tables are checked as rendered: trending lists only products with activity, the
sentiment table is ranked by evidence (the negative share shrunk towards the shop-wide share, computed
here again from the counts shown), times are labelled UTC event time or wall clock, and nothing the page asks for is
missing (favicon included). The marketing triggers panel counts what the worker published to
``marketing-triggers`` (the history's abandoned carts). Then a silence is created from the alert's button and
must show up in ``GET /silences``.
A screenshot goes to the test's tmp_path and to ``test-output/`` at the repository root.

Skipped only when Chromium (or Playwright) is missing *and* ``CI`` is not set: CI installs Chromium
(``.ci/run``) and must run it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from streamproc import generator, loadgen
from streamproc.generator import Anomaly

from .support import isolated_env, read_topic, start_worker, values, wait_for

pytestmark = pytest.mark.integration

T = TypeVar("T")
MIN = 60_000
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DETECTOR = {"STREAMPROC_DETECT_WARMUP_MS": str(15 * MIN), "STREAMPROC_DETECT_COOLDOWN_MS": str(60 * MIN),
            "STREAMPROC_IDLE_TIMEOUT_MS": "2000", "STREAMPROC_CART_ABANDON_MS": str(MIN)}
"""Carts count as abandoned after a minute (the least allowed), so the history's carts make triggers."""


def _chromium() -> str:
    """Path of the Chromium binary, or skip (fail under CI) when it or Playwright is missing."""
    path = os.environ.get("STREAMPROC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if path is None:
        missing = "chromium is not installed (Debian: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {missing}; .ci/run installs it")
        pytest.skip(missing)
    return path  # type: ignore[return-value]


def _check_rankings(page: Any) -> None:
    """Trending by orders: only products with orders in the last 5 min (or firing). Sentiment: firing first,
    then by the lower bound of the negative share, so a single bad review does not top the table."""
    trend = page.eval_on_selector_all(
        "#trend-orders tbody tr[data-product]",
        "rows => rows.map(r => [r.dataset.product, Number(r.dataset.count), r.classList.contains('firing')])")
    assert trend and all(count > 0 or firing for _, count, firing in trend), trend
    # Reviews are counted once scored, after the clicks and orders: wait until the table holds the case
    # (several scored products, one with at least two negative reviews) before checking how it is ranked.
    page.wait_for_function(
        "(() => { const rows = [...document.querySelectorAll("
        "'#sentiment tbody tr[data-product][data-negative]:not([data-negative=\"\"])')];"
        " return rows.length >= 3 && rows.some(r => Number(r.dataset.negative) >= 2); })()", timeout=60_000)
    rows = page.eval_on_selector_all(
        "#sentiment tbody tr[data-product]",
        "rows => rows.map(r => [r.dataset.product, Number(r.dataset.negative), Number(r.dataset.reviews), "
        "r.classList.contains('firing')])")
    prior = float(page.get_attribute("#sentiment", "data-prior") or "nan")
    assert 0 < prior < 1, prior
    # recomputed here from the counts on the page: the negative share with 10 reviews at the shop's share
    keys = [(not firing, -round((k + 10 * prior) / (n + 10), 3)) for _, k, n, firing in rows]
    assert keys == sorted(keys), (prior, rows)
    # the case: a single (negative) review does not top the table over products with several
    assert any(k >= 2 for _, k, _, _ in rows) and rows[0][2] > 1, rows


def _check_times(page: Any, key: str) -> None:
    updated = page.text_content("#updated") or ""
    assert re.fullmatch(r"wall clock \d\d:\d\d:\d\d UTC · event time \d\d:\d\d:\d\d UTC", updated), updated
    meta = page.locator(f'.alert[data-dedup-key="{key}"] .meta').all_inner_texts()
    assert any(re.search(r"since \d\d:\d\d UTC \(event time\)", m) for m in meta), meta
    assert any("UTC (event time)" in m for m in meta), meta  # the description's window start, labelled


def _published(bootstrap: str, topic: str, at_least: int = 0) -> dict[str, dict[str, Any]]:
    """The marketing triggers on ``topic`` by ``trigger_id``, once there are ``at_least`` (or a deadline)."""
    recs = _off_loop(lambda: asyncio.run(read_topic(bootstrap, topic, timeout_s=15, idle_s=0.5,
                                                    until=lambda rs: len(rs) >= at_least)))
    return {t["trigger_id"]: t for t in values(recs)}


def _check_triggers(page: Any, bootstrap: str, topic: str) -> None:
    """The triggers panel counts what the worker published to ``marketing-triggers``: for a snapshot taken
    between two reads of the topic (the second waits until the topic holds as many as the panel counted:
    the worker counts a trigger when it hands it to its producer), each kind's count lies between the two
    reads' counts, and every trigger in the latest list is on the topic with that kind."""
    page.wait_for_selector('#trigger-counts .card[data-kind="cart_abandoned"]:not([data-count="0"])',
                           timeout=30_000)
    before = _published(bootstrap, topic)
    after_before_ms = time.time() * 1000
    page.wait_for_function(f"Number(document.getElementById('triggers-section').dataset.now) > {after_before_ms}",
                           timeout=10_000)
    shown = dict(page.eval_on_selector_all("#trigger-counts .card[data-kind]",
                                           "cs => cs.map(c => [c.dataset.kind, Number(c.dataset.count)])"))
    latest = page.eval_on_selector_all("#triggers tbody tr[data-trigger]",
                                       "rs => rs.map(r => [r.dataset.trigger, r.dataset.kind])")
    after = _published(bootstrap, topic, sum(shown.values()))  # handed to the producer by then, flushed soon
    assert set(shown) == {"cart_abandoned", "browse_abandoned", "win_back", "interest_surging"}, shown
    for kind, n in shown.items():
        lo = sum(t["kind"] == kind for t in before.values())
        hi = sum(t["kind"] == kind for t in after.values())
        assert lo <= n <= hi, (kind, lo, n, hi)
    assert shown["cart_abandoned"] > 0 and latest, (shown, latest)
    assert len(latest) == min(10, sum(shown.values()))
    assert all(after[tid]["kind"] == kind for tid, kind in latest), latest


def _off_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` in another thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def _traffic(now_ms: int) -> tuple[generator.Scenario, str]:
    """30 min of steady history ending now, with a x10 surge on the most popular product in the last 8 min."""
    sc = generator.scenario("steady", start_ms=now_ms - 30 * MIN, duration_ms=30 * MIN, rate_eps=6.0, seed=3,
                            products=20)
    cat = generator.catalog_of(sc)
    top = cat.product_ids[int(cat.ranks[0])]
    return dataclasses.replace(sc, anomalies=(Anomaly(top, "demand_surge", now_ms - 8 * MIN, now_ms, 10.0),)), top


def test_surge_shows_live_and_a_silence_is_created_from_the_page(embedded_broker: str, tmp_path: Path) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    env = isolated_env(embedded_broker, tmp_path, DETECTOR)
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders", "reviews")}
    worker = start_worker(env, tmp_path)
    shot = tmp_path / "dashboard.png"
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 1000})
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                errors: list[str] = []
                missing: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                page.goto(worker.url + "/", wait_until="domcontentloaded")
                page.wait_for_selector("#conn.ok", timeout=15_000)  # the event stream is live

                sc, top = _traffic(int(time.time() * 1000) // MIN * MIN)
                report = _off_loop(lambda: asyncio.run(loadgen.produce(
                    embedded_broker, generator.events(sc, 3), speed=None, progress=False, topic_names=names)))
                assert report.errors == 0

                # The surge arrives without a reload: orders or clicks, whichever fires first.
                alert = page.wait_for_selector(
                    f'.alert[data-dedup-key^="demand_surge:"][data-dedup-key$=":{top}"]', timeout=45_000)
                assert alert is not None
                key = alert.get_attribute("data-dedup-key")
                # The list is re-rendered from every snapshot: use locators (re-resolved), not the handle.
                card = page.locator(f'.alert[data-dedup-key="{key}"]')
                assert top in card.inner_text()
                page.wait_for_selector(f'#trend-orders tr[data-product="{top}"] svg.spark', timeout=10_000)
                health = page.text_content("#health") or ""
                assert "clicks" in health and "watermark delay" in health
                assert key is not None
                _check_rankings(page)
                _check_times(page, key)
                _check_triggers(page, embedded_broker, env["STREAMPROC_TOPIC_MARKETING_TRIGGERS"])
                favicon = page.request.get(worker.url + "/favicon.ico")
                assert favicon.status == 200 and favicon.headers["content-type"] == "image/svg+xml"

                card.locator("button[data-action=silence]").click()
                page.wait_for_function("document.getElementById('toast').textContent.startsWith('silenced')",
                                       timeout=10_000)
                silences = wait_for(lambda: _off_loop(lambda: worker.get("/silences"))["silences"], 10)
                labels = {m["name"]: m["value"] for m in silences[0]["matchers"]}
                assert key is not None
                alertname, signal, product = key.split(":")
                assert labels["alertname"] == alertname and labels["signal"] == signal
                assert labels["product_id"] == product == top and "severity" not in labels
                assert silences[0]["createdBy"] == "dashboard"
                page.wait_for_selector(f'.alert.silenced[data-dedup-key="{key}"]', timeout=10_000)
                page.screenshot(path=str(shot), full_page=True)
                assert not errors, errors
                assert not missing, missing
            finally:
                ctx.close()
    finally:
        worker.stop()
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    shutil.copy(shot, out / "dashboard.png")
    assert shot.stat().st_size > 10_000
    print(f"browser test {time.monotonic() - started:.1f}s; screenshot {out / 'dashboard.png'}")

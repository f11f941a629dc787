"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a real
server that takes ZeroMQ and HTTP traffic. Chromium is required: without it these tests fail.

The page's screenshot is saved as ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from bert_serving.client import BertClient

from ..conftest import REPO
from .conftest import free_ports, running_server

SENTENCES = ["First do it", "then do it right", "then do it better"]
KEY = "dashboard-key"
ARTIFACTS = REPO / "test-artifacts"
# Known-good flags for headless Chromium on a machine without a display or a network
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000  # the longest any figure may take to appear on the page


def chromium_path() -> str:
    """Debian's chromium (or ``$BERT_SERVING_CHROMIUM``); a missing browser fails the test."""
    path = os.environ.get("BERT_SERVING_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium is missing: `apt-get install chromium` (as root, `make install` does it), "
                    "or point BERT_SERVING_CHROMIUM at a Chromium binary")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def dashboard_server():
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(port), "-num_worker", "2") as server:
        yield server, f"http://127.0.0.1:{port}"


class Console:
    """Every console error and uncaught exception of a page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url')})")


def send_traffic(server, base_url: str, rounds: int, identity: str, key: str | None = None) -> int:
    """``rounds`` ZeroMQ requests from client ``identity``, then ``rounds`` each of ``/encode``
    and ``/v1/embeddings``; returns how many encode requests were sent."""
    with BertClient(port=server.config.port, port_out=server.config.port_out, identity=identity,
                    check_version=False, timeout=30_000) as bc:
        for i in range(rounds):
            bc.encode(SENTENCES[: 1 + i % 3])
            time.sleep(0.02)  # spread over a few refreshes, so the charts draw a line
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for _ in range(rounds):
            http.post("/encode", json={"texts": SENTENCES}).raise_for_status()
            http.post("/v1/embeddings", json={"input": SENTENCES[:2]}).raise_for_status()
            time.sleep(0.02)
    return 3 * rounds


def status(base_url: str, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{base_url}/status/server", headers=headers, timeout=30).json()["statistic"]


def chart_points(page: Page, name: str) -> list[list]:
    """The data a chart draws: ``[times, series 1, series 2, ...]``."""
    return page.evaluate(f"() => window.bertServingDashboard.charts.{name}.data")


def test_the_dashboard_shows_the_server_live(browser: Browser, dashboard_server) -> None:
    server, base = dashboard_server
    sent = send_traffic(server, base, rounds=3, identity="before-the-page")
    bad = httpx.post(f"{base}/encode", json={"texts": []}, timeout=30)
    assert bad.status_code == 400
    sent += 1  # a refused request is a request too
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)

    page.goto(f"{base}/")  # a browser gets links at /
    page.get_by_role("link", name="Dashboard").click()
    assert page.url == f"{base}/dashboard"
    page.goto(f"{base}/dashboard?refresh=0.5")
    expect(page.locator("#model-name")).to_have_text("google", timeout=WAIT_MS)
    model = page.locator("#model")
    for setting, value in (("format", "google"), ("pooling", "REDUCE_MEAN"), ("layers", "-2"), ("max_seq_len", "16"),
                           ("dtype", "float32"), ("device", "cpu"), ("workers", "2")):
        expect(model.locator("tr", has_text=re.compile(f"^{setting}"))).to_contain_text(value)
    expect(page.locator("#status")).to_have_text("ready")
    expect(page.locator("#requests-total")).to_have_text(str(sent), timeout=WAIT_MS)
    expect(page.locator("#requests-split")).to_have_text("ZeroMQ 3 · HTTP 7")
    expect(page.locator("#errors tbody tr", has_text="invalid_request")).to_contain_text("1")
    expect(page.locator("#workers tbody tr")).to_have_count(2)
    expect(page.locator("#workers td:nth-child(3)")).to_have_text([re.compile("^(idle|busy)$")] * 2)
    before = chart_points(page, "throughput")

    sent += send_traffic(server, base, rounds=20, identity="while-watching")

    expect(page.locator("#requests-total")).to_have_text(str(sent), timeout=WAIT_MS)
    assert status(base)["num_data_request"] == sent  # the page and SHOW_STATUS agree
    expect(page.locator("#sentences-total")).to_have_text(str(status(base)["num_total_seq"]))
    for client, channel, requests in (("zmq:while-watching", "ZeroMQ", "20"), ("http:127.0.0.1", "HTTP", "47")):
        cells = page.locator("#clients tbody tr", has_text=client).locator("td")
        expect(cells.nth(1)).to_have_text(channel)
        expect(cells.nth(2)).to_have_text(requests)
    # the charts moved: rates were drawn for the new traffic (the first sample has no rate)
    page.wait_for_function("""n => {
        const [times, requests, sentences] = window.bertServingDashboard.charts.throughput.data;
        return times.length > n && requests.some(v => v > 0) && sentences.some(v => v > 0);
    }""", arg=len(before[0]), timeout=WAIT_MS)
    assert not any(v for v in before[1] if v)  # nothing was sent while the page watched, before
    batches = chart_points(page, "batches")
    assert any(v and v >= 1 for v in batches[1]) and any(v and v > 0 for v in batches[2])
    latency = chart_points(page, "latency")
    assert any(v and v > 0 for v in latency[-2])  # total p50
    # the traffic is over: the rate comes back to zero (and the picture shows the whole burst)
    page.wait_for_function("() => window.bertServingDashboard.charts.throughput.data[1].at(-1) === 0",
                           timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    assert console.errors == []


def test_the_dashboard_reports_the_counters_of_status_and_metrics(dashboard_server) -> None:
    server, base = dashboard_server
    send_traffic(server, base, rounds=2, identity="counted")
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/").json()["dashboard"] == "/dashboard"  # programs get JSON at /, browsers links
        view = http.get("/dashboard/data").json()
        statistic = http.get("/status/server").json()["statistic"]
        metrics = {s.name + str(sorted(s.labels.items())): s.value
                   for family in text_string_to_metric_families(http.get("/metrics").text) for s in family.samples}
    requests = sum(view["requests"].values())
    assert requests == statistic["num_data_request"]
    assert requests == metrics["bert_serving_requests_total[('channel', 'zmq')]"] + \
        metrics["bert_serving_requests_total[('channel', 'http')]"]
    assert view["sentences"] == statistic["num_total_seq"] == metrics["bert_serving_sentences_total[]"]
    assert view["forward_passes"] == statistic["num_forward_passes"] == metrics["bert_serving_forward_passes_total[]"]
    assert view["completed_requests"] == statistic["num_completed_request"]
    assert view["errors"] == statistic["errors"]
    assert view["batch_size"]["count"] == view["forward_passes"]
    assert view["batch_size"]["sum"] == statistic["num_batched_seq"]
    assert {p: v["count"] for p, v in view["latency_ms"].items()} == \
        {p: v["count"] for p, v in statistic["latency_ms"].items()}
    assert view["readiness"] == {"ready": True, "status": "ready", "workers": {"0": "idle", "1": "idle"},
                                 "processes": {"router": "up", "intake-0": "up", "http-0": "up"}}
    assert view["model"]["name"] == "google" and view["model"]["workers"] == 2
    assert any(c["client"] == "zmq:counted" and c["requests"] == 2 for c in view["clients"])


def test_the_dashboard_asks_for_the_api_key(browser: Browser) -> None:
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(port), "-api_key", KEY) as server:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/dashboard/data").status_code == 401
        assert httpx.get(f"{base}/dashboard").status_code == 200  # the page itself holds no numbers
        context = browser.new_context()
        page = context.new_page()
        console = Console(page)
        page.goto(f"{base}/dashboard?refresh=0.5")
        expect(page.locator("#key-form")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#requests-total")).to_have_text("–")
        page.fill("#key-input", "not-the-key")
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#key-message")).to_contain_text("refused", timeout=WAIT_MS)
        page.fill("#key-input", KEY)
        page.press("#key-input", "Enter")
        expect(page.locator("#model-name")).to_have_text("google", timeout=WAIT_MS)
        expect(page.locator("#key-form")).to_be_hidden()
        sent = send_traffic(server, base, rounds=1, identity="with-key", key=KEY)
        expect(page.locator("#requests-total")).to_have_text(str(sent), timeout=WAIT_MS)
        assert status(base, KEY)["num_data_request"] == sent

        # or the key in the fragment, which the page then takes out of the address bar
        fresh = browser.new_context().new_page()
        fresh_console = Console(fresh)
        fresh.goto(f"{base}/dashboard?refresh=0.5#key={KEY}")
        expect(fresh.locator("#requests-total")).to_have_text(str(sent), timeout=WAIT_MS)
        assert fresh.url == f"{base}/dashboard?refresh=0.5"
        assert fresh_console.errors == []
        unauthorized = [e for e in console.errors if "status of 401" in e and "/dashboard/data" in e]
        assert len(unauthorized) == 2 and unauthorized == console.errors  # the two refusals, nothing else

"""The shipped alert rules in a real Prometheus (Debian's `prometheus`) scraping a real worker:
MongoDB cut on a fail-open route fires PersistencePersistFailed, MongoDB frozen on a fail-closed
route fires PersistenceConsumerStalled, and both resolve once MongoDB is back.

Prometheus runs on a loopback port with its own TSDB in tmp, 1 s scrape and evaluation, and the
rules of deploy/prometheus/alerts.yaml after one documented transformation (`shorten`): every
`for:` and range window in minutes becomes as many seconds. The exprs are otherwise unchanged.
Each test prints how long after the fault each alert fired (`-s` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.integration.harness import WorkerProcess, prepare_topics, publish_good, settings_for, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.mongo_faults import through_proxy, upstream_of
from tests.support.processes import stop
from tests.support.standins import free_port
from worker.settings import RouteName, Settings

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"
_RANGE_IN_MINUTES = re.compile(r"\[(\d+)m\]")
_FOR_IN_MINUTES = re.compile(r"^(\d+)m$")


def shorten(rules_text: str) -> str:
    """Every `for:` and range window in minutes becomes as many seconds (`for: 5m` -> `5s`, `[10m]` -> `[10s]`)."""
    document = yaml.safe_load(rules_text)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _RANGE_IN_MINUTES.sub(r"[\1s]", rule["expr"])
            if "for" in rule:
                rule["for"] = _FOR_IN_MINUTES.sub(r"\1s", rule["for"])
    return yaml.safe_dump(document, sort_keys=False)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@dataclass
class Prometheus:
    """A running Prometheus; its HTTP API read off the event loop (the fault proxy runs on it)."""

    url: str
    fired_at: dict[str, float] = field(default_factory=dict)

    async def alerts(self) -> list[dict[str, Any]]:
        body = await asyncio.to_thread(_get_json, self.url + "/api/v1/alerts")
        return list(body["data"]["alerts"])

    async def states(self) -> dict[str, str]:
        """Alert name -> its state (pending or firing); resolved alerts are absent."""
        states: dict[str, str] = {}
        for alert in await self.alerts():
            name = alert["labels"]["alertname"]
            if states.get(name) != "firing":
                states[name] = alert["state"]
        return states

    async def firing(self, name: str) -> bool:
        return (await self.states()).get(name) == "firing"

    async def resolved(self, name: str) -> bool:
        return name not in await self.states()

    async def scraped(self) -> bool:
        body = await asyncio.to_thread(_get_json, self.url + "/api/v1/targets")
        return any(target["health"] == "up" for target in body["data"]["activeTargets"])

    async def watch_firing(self, since: float, stop: asyncio.Event) -> None:
        """Record, for each alert that reaches firing, the seconds from `since`."""
        while not stop.is_set():
            with contextlib.suppress(OSError):
                for name, state in (await self.states()).items():
                    if state == "firing":
                        self.fired_at.setdefault(name, round(time.monotonic() - since, 1))
            await asyncio.sleep(0.5)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _start(binary: str, tmp_path: Path, port: int, log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


async def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.to_thread(urllib.request.urlopen, url + "/-/ready", None, 2)
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(_tail(log)) from None
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_prometheus(tmp_path: Path, worker_port: int) -> AsyncIterator[Prometheus]:
    """Prometheus scraping 127.0.0.1:`worker_port` as job persistence-worker, with the shortened rules."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make setup` (installs Debian's prometheus package)"
    (tmp_path / "alerts.yaml").write_text(shorten(RULES.read_text()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(tmp_path / "alerts.yaml")],
        "scrape_configs": [
            {"job_name": "persistence-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log_path = free_port(), tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = _start(binary, tmp_path, port, log)
        try:
            server = Prometheus(url=f"http://127.0.0.1:{port}")
            await _ready(server.url, process, log_path)
            yield server
        finally:
            await asyncio.to_thread(stop, process, 30)


@contextlib.asynccontextmanager
async def worker_behind_proxy(
    settings_of: Any, mongo_uri: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, FaultProxy, WorkerProcess]]:
    """A worker process whose MongoDB connections pass through a fault proxy, serving /metrics."""
    async with FaultProxy(upstream=upstream_of(mongo_uri)) as proxy:
        settings = settings_of(through_proxy(mongo_uri, proxy.address), free_port())
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        try:
            yield settings, proxy, worker
        finally:
            proxy.heal()
            worker.terminate(timeout=60)


async def _publishing(settings: Settings, route: RouteName, stop: asyncio.Event) -> None:
    """Publish a few events of `route` every half second until `stop`."""
    seed = 1000
    while not stop.is_set():
        await publish_good(settings, route, 5, seed=seed)
        seed += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def test_persist_failed_fires_while_mongodb_is_cut_and_resolves_after(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, tmp_path: Path
) -> None:
    """MongoDB cut under a fail-open route: Prometheus fires PersistencePersistFailed, and resolves it once MongoDB is back."""

    def settings_of(uri: str, port: int) -> Settings:
        return settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=uri, http_port=port)

    async with worker_behind_proxy(settings_of, mongo_uri, tmp_path) as (settings, proxy, worker):
        await prepare_topics(create_topics, settings)
        async with running_prometheus(tmp_path, settings.http_port) as prometheus:
            await wait_until(prometheus.scraped, within=60, what="Prometheus scraping the worker")
            await publish_good(settings, RouteName.RESULTS, 5, seed=1)
            await asyncio.sleep(3)
            assert "PersistencePersistFailed" not in await prometheus.states()
            stop = asyncio.Event()
            proxy.cut()
            cut_at = time.monotonic()
            tasks = [asyncio.create_task(_publishing(settings, RouteName.RESULTS, stop)),
                     asyncio.create_task(prometheus.watch_firing(cut_at, stop))]  # fmt: skip
            try:
                await wait_until(lambda: prometheus.firing("PersistencePersistFailed"), within=90,
                                 what="PersistencePersistFailed firing")  # fmt: skip
                proxy.heal()
                healed_at = time.monotonic()
                await wait_until(lambda: prometheus.resolved("PersistencePersistFailed"), within=90,
                                 what="PersistencePersistFailed resolved")  # fmt: skip
                resolved_after = round(time.monotonic() - healed_at, 1)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            print(f"\nMongoDB cut (fail-open): fired after {prometheus.fired_at} s; "
                  f"PersistencePersistFailed resolved {resolved_after} s after MongoDB was back")  # fmt: skip
    assert "PersistencePersistFailed" in prometheus.fired_at
    assert '"workflow_results_persist_failed"' in worker.log_text()


async def test_stalled_consumer_fires_while_mongodb_is_frozen_and_resolves_after(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, tmp_path: Path
) -> None:
    """MongoDB frozen under a fail-closed route: lag stays positive without commits, Prometheus fires PersistenceConsumerStalled, and resolves it once MongoDB answers again."""

    def settings_of(uri: str, port: int) -> Settings:
        return settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=uri, http_port=port,
                            fail_closed_routes=frozenset({RouteName.RESULTS}))  # fmt: skip

    async with worker_behind_proxy(settings_of, mongo_uri, tmp_path) as (settings, proxy, _):
        await prepare_topics(create_topics, settings)
        async with running_prometheus(tmp_path, settings.http_port) as prometheus:
            await wait_until(prometheus.scraped, within=60, what="Prometheus scraping the worker")
            await publish_good(settings, RouteName.RESULTS, 5, seed=2)
            await asyncio.sleep(3)
            assert "PersistenceConsumerStalled" not in await prometheus.states()
            stop = asyncio.Event()
            proxy.freeze()
            frozen_at = time.monotonic()
            await publish_good(settings, RouteName.RESULTS, 20, seed=3)
            watcher = asyncio.create_task(prometheus.watch_firing(frozen_at, stop))
            try:
                await wait_until(lambda: prometheus.firing("PersistenceConsumerStalled"), within=90,
                                 what="PersistenceConsumerStalled firing")  # fmt: skip
                proxy.heal()
                healed_at = time.monotonic()
                await wait_until(lambda: prometheus.resolved("PersistenceConsumerStalled"), within=120,
                                 what="PersistenceConsumerStalled resolved")  # fmt: skip
                resolved_after = round(time.monotonic() - healed_at, 1)
            finally:
                stop.set()
                await watcher
            print(f"\nMongoDB frozen (fail-closed): fired after {prometheus.fired_at} s; "
                  f"PersistenceConsumerStalled resolved {resolved_after} s after MongoDB was back")  # fmt: skip
    assert "PersistenceConsumerStalled" in prometheus.fired_at

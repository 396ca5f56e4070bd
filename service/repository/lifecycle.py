"""Model lifecycle without restarts: the repository poller and the control operations behind
POST /v2/repository/models/{name}/load and /unload (like Triton's model control).

Every change goes through one lock, so a poll and an explicit load never prove at the same time.
Proving runs in a worker thread (`ModelRegistry.plan`), the swap on the event loop
(`ModelRegistry.commit`), followed at once by dropping the dynamic batchers of versions that no
longer serve: a batcher is keyed by id() of its version, and an id may be reused once the old
version is freed, so a batcher must never outlive its version's place in the registry.
With several workers each worker polls and proves for itself; they converge on the same versions
within one poll interval (plus one proof).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from anyio import to_thread

from service.base.metrics import Metrics
from service.base.errors import BadRequestError
from service.repository.registry import ModelEntry, ModelRegistry, Plan

log = logging.getLogger(__name__)


class Lifecycle:
    """Refreshes one registry: periodically (`interval_s` > 0) and on request."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics, batchers: dict[int, Any], interval_s: float):
        self.registry = registry
        self.metrics = metrics
        self.batchers = batchers
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None

    # -- operations -----------------------------------------------------------------------------
    async def refresh(self) -> Plan:
        """Prove whatever is new or changed in the repository, then serve it."""
        async with self._lock:
            plan = await to_thread.run_sync(self.registry.plan)
            self._apply(plan)
            return plan

    async def load(self, name: str) -> Plan:
        """Prove `name` now (refused versions again too) and serve it; NotFoundError when no such directory."""
        async with self._lock:
            plan = await to_thread.run_sync(self.registry.load_plan, name)
            self._apply(plan)
            return plan

    async def unload(self, name: str) -> Plan:
        """Stop serving `name` (requests in flight finish); the poller leaves it alone until `load`."""
        async with self._lock:
            plan = self.registry.unload_plan(name)
            self._apply(plan)
            return plan

    def _apply(self, plan: Plan) -> None:
        registry, metrics = self.registry, self.metrics
        before = {id(proven): proven for proven in registry.served_versions()}
        previous = set(registry.models)
        registry.commit(plan)
        after = {id(proven): proven for proven in registry.served_versions()}
        # Keep only the batchers of versions served before and after (same object): `before` holds
        # those objects alive right now, so no id below can belong to a freed version.
        for key in list(self.batchers):
            if not (key in before and after.get(key) is before[key]):
                del self.batchers[key]
        metrics.repository_polls.inc()
        for name, entry in registry.models.items():
            metrics.models_loaded.labels(name).set(len(entry.served))
            latest = entry.latest
            metrics.serving_version.labels(name).set(latest.manifest.version if latest else 0)
        for name in previous - set(registry.models):
            metrics.models_loaded.labels(name).set(0)
            metrics.serving_version.labels(name).set(0)
        for name, _ in plan.proved:
            metrics.version_events.labels(name, "proved").inc()
        for name, _, _ in plan.refused:
            metrics.version_events.labels(name, "refused").inc()
        for name, _ in plan.removed:
            metrics.version_events.labels(name, "removed").inc()

    # -- the poller -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="monoserve-repository-poller")
            log.info("polling %s every %g s for new, changed and removed versions", self.registry.repo, self.interval_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a poll that fails must not stop the next one
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("polling the model repository failed")


def raise_unless_newest_serves(entry: ModelEntry) -> None:
    """After a load: a 400 naming the refusal unless the newest version of `entry` serves (REST and gRPC load)."""
    newest = max(entry.reports)
    if newest in entry.served:
        return
    latest = entry.latest
    keeps = f"; version {latest.manifest.version} keeps serving" if latest else "; no version serves"
    raise BadRequestError(f"failed to load {entry.name!r}: version {newest} was refused: {entry.reports[newest].reason}"
                          + keeps, model=entry.name, version=newest,
                          serving_version=latest.manifest.version if latest else None)

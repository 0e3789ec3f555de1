"""Follows config.json's pipelines: adds, rebuilds and retires them as the file changes, and
follows the models they use (`refresh`, after every change of the models)."""

from __future__ import annotations

import asyncio
import logging

from ..custom_nodes import CustomNode
from ..models import ModelTable
from ..registry import Registry
from .build import build_custom_nodes
from .config import CUSTOM_NODE, PipelineConfig, PipelineSet
from .graph import PipelineError, check_graph
from .serving import Pipeline, PipelineEntry

log = logging.getLogger("dropin.pipelines")


class PipelineManager:
    def __init__(self, table: ModelTable, custom_nodes: Registry[CustomNode]) -> None:
        self.table = table
        self.custom_nodes = custom_nodes

    async def apply(self, pipelines: PipelineSet) -> bool:
        """Serve exactly these pipelines (after the models were applied). True if any changed."""
        libraries = dict(pipelines.libraries)
        wanted = {p.name: p for p in pipelines.pipelines}
        changed = False
        for config in pipelines.pipelines:
            if config.name in self.table.models:
                log.error("pipeline %s: not served: a model has that name", config.name)
                continue
            used = {n.library_name: libraries.get(n.library_name) for n in config.nodes if n.kind == CUSTOM_NODE}
            source = (config, tuple(sorted(used.items(), key=str)))
            entry = self.table.pipelines.get(config.name)
            if entry is not None and not entry.removed and entry.source == source:
                continue
            pipeline, error = await self._build(config, libraries)
            if entry is None:
                entry = self.table.pipelines[config.name] = PipelineEntry(config.name)
                log.info("pipeline %s: serving (%d nodes)", config.name, len(config.nodes))
            else:
                log.info("pipeline %s: configuration changed, rebuilt", config.name)
            entry.install(pipeline, error, source)
            changed = True
        for name, entry in self.table.pipelines.items():
            if name not in wanted and not entry.removed:
                log.info("pipeline %s: removed from the configuration", name)
                entry.retire()
                changed = True
        return changed

    async def _build(self, config: PipelineConfig, libraries: dict[str, str]) -> tuple[Pipeline | None, str | None]:
        try:
            graph = check_graph(config)
            customs = await asyncio.to_thread(build_custom_nodes, graph, libraries, self.custom_nodes)
        except PipelineError as exc:
            return None, str(exc)
        return Pipeline(graph, customs, self.table), None

    def refresh(self) -> None:
        """Every pipeline's status, after the models changed."""
        for entry in list(self.table.pipelines.values()):
            entry.refresh()

    async def close(self) -> None:
        """Retire every pipeline once its requests are done (at shutdown)."""
        closing = [entry.retire() for entry in self.table.pipelines.values() if not entry.removed]
        await asyncio.gather(*(task for task in closing if task is not None))

"""The one shape every per-document stage has, and how Ray Data runs it.

A stage looks at one kept document at a time and either returns ``None`` (keep; it may have
changed the document, e.g. filled in its text) or a short reason string (drop). The base class
turns that into batch processing, passes already-dropped rows through, and turns an exception
on one document into a counted rejection (``error:<ExceptionType>``) instead of a failed job.

Stages compose as a plain list; :func:`apply_stages` maps each over a Ray dataset.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa

from pipeline.records import Document, from_table, is_kept, mark_dropped, to_table

__all__ = ["Stage", "StageChain", "apply_stages"]

log = logging.getLogger(__name__)


class Stage(ABC):
    """A per-document step of the data pipeline.

    Subclasses set ``name`` and implement :meth:`process`. Heavy state (models, compiled
    regexes) is built in :meth:`setup`, which runs once in each Ray worker, not in the driver.
    """

    name: str = "stage"

    def setup(self) -> None:  # noqa: B027 - an optional hook; most stages need no setup
        """Load whatever the stage needs; called once per worker before the first batch."""

    @abstractmethod
    def process(self, doc: Document) -> str | None:
        """Inspect (and possibly edit) one kept document; return a drop reason or None."""

    def process_batch(self, docs: Sequence[Document]) -> list[Document]:
        """Run :meth:`process` over a batch; dropped rows pass through untouched."""
        errors: Counter[str] = Counter()
        for doc in docs:
            if not is_kept(doc):
                continue
            try:
                reason = self.process(doc)
            except Exception as exc:  # one bad document must not fail the job
                reason = f"error:{type(exc).__name__}"
                errors[reason] += 1
            if reason is not None:
                mark_dropped(doc, self.name, reason)
        if errors:
            log.warning("stage %s: %s", self.name, dict(errors))
        return list(docs)


class StageChain:
    """Ray Data batch function running a list of stages in order on each batch.

    Ray Data instantiates it once per worker actor, so every stage's :meth:`Stage.setup` (a
    language model, say) is paid once per actor rather than once per batch, and the stages of
    a chain share one actor pool instead of reserving CPUs each.
    """

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)
        for stage in self.stages:
            stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        docs = from_table(batch)
        for stage in self.stages:
            docs = stage.process_batch(docs)
        return to_table(docs)


def apply_stages(ds, stages: Sequence[Stage], *, concurrency: int, batch_size: int = 16):
    """Map a list of per-document stages over a Ray dataset of documents, in order."""
    import ray

    return ds.map_batches(
        StageChain,
        fn_constructor_args=(list(stages),),
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
    )

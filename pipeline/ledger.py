"""The ledger: for every run, documents in = documents kept + documents dropped.

Counts come from the final rows of a run (every row that entered is still there, kept or
marked dropped by a stage), so the ledger balances by construction; :attr:`Ledger.balanced`
checks it anyway, and tests assert it.

Beside the ledger a run keeps, from the same rows, a few rejected documents per stage and
reason for inspection (:func:`sample_rejects`, written to ``rejects_sample.jsonl``) and the sums
of per-document counters that stages record in ``meta`` (PII replacements, lines removed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "COUNTER_KEYS",
    "REJECT_SAMPLES_PER_REASON",
    "Ledger",
    "count_outcomes",
    "counter_sums",
    "merge_reject_samples",
    "sample_rejects",
    "sum_counters",
]

# Rejected documents kept per (stage, reason) for a person to look at.
REJECT_SAMPLES_PER_REASON = 5
# meta keys holding per-document counts that a run sums into its stats.
COUNTER_KEYS = ("pii_emails", "pii_ip_addresses", "c4_lines_removed")


def count_outcomes(batch: pa.Table) -> pa.Table:
    """Ray Data batch function: rows per (drop_stage, drop_reason); nulls mean kept."""
    grouped = batch.select(["drop_stage", "drop_reason"]).group_by(
        ["drop_stage", "drop_reason"], use_threads=False
    )
    return grouped.aggregate([([], "count_all")]).rename_columns(
        ["drop_stage", "drop_reason", "count"]
    )


def sample_rejects(batch: pa.Table, per_reason: int = REJECT_SAMPLES_PER_REASON) -> pa.Table:
    """Ray Data batch function: the first few dropped rows of each (stage, reason)."""
    dropped = batch.filter(pc.is_valid(batch["drop_reason"]))
    taken: Counter[tuple[str, str]] = Counter()
    rows = []
    for row in dropped.select(
        ["id", "source", "url", "drop_stage", "drop_reason", "text", "meta"]
    ).to_pylist():
        key = (row["drop_stage"], row["drop_reason"])
        if taken[key] >= per_reason:
            continue
        taken[key] += 1
        meta = dict(row["meta"] or [])
        rows.append(
            {
                "stage": row["drop_stage"],
                "reason": row["drop_reason"],
                "id": row["id"],
                "source": row["source"],
                "url": row["url"],
                "title": meta.get("title"),
                "text": row["text"],  # already cut to a sample when the row was dropped
                "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
            }
        )
    return pa.Table.from_pylist(rows, schema=_SAMPLE_SCHEMA)


_SAMPLE_SCHEMA = pa.schema(
    [
        (name, pa.string())
        for name in ("stage", "reason", "id", "source", "url", "title", "text", "meta")
    ]
)


def merge_reject_samples(
    rows: Iterable[dict], per_reason: int = REJECT_SAMPLES_PER_REASON
) -> list[dict]:
    """Combine per-batch samples: at most ``per_reason`` per (stage, reason), sorted."""
    taken: Counter[tuple[str, str]] = Counter()
    out = []
    for row in rows:
        key = (row["stage"], row["reason"])
        if taken[key] < per_reason:
            taken[key] += 1
            out.append({**row, "meta": json.loads(row["meta"]) if row.get("meta") else {}})
    return sorted(out, key=lambda r: (r["stage"], r["reason"]))


def counter_sums(batch: pa.Table, keys: Sequence[str] = COUNTER_KEYS) -> pa.Table:
    """Ray Data batch function: one row with the sum of each counter over the batch's meta."""
    sums = dict.fromkeys(keys, 0)
    for meta in batch.column("meta").to_pylist():
        for key, value in meta or []:
            if key in sums:
                sums[key] += int(value)
    return pa.Table.from_pylist([sums], schema=pa.schema([(k, pa.int64()) for k in keys]))


def sum_counters(rows: Iterable[dict]) -> dict[str, int]:
    """Add up the per-batch rows of :func:`counter_sums`."""
    total: Counter[str] = Counter()
    for row in rows:
        total.update({k: int(v) for k, v in row.items() if v})
    return dict(sorted(total.items()))


@dataclass
class Ledger:
    """Documents in, kept, and dropped by stage and reason for one run."""

    stages: list[str]
    documents_in: int
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, rows: Sequence[dict], stages: Sequence[str]) -> Ledger:
        total = 0
        dropped: dict[str, Counter[str]] = {s: Counter() for s in stages}
        for row in rows:
            total += int(row["count"])
            if row["drop_stage"] is not None:
                dropped.setdefault(row["drop_stage"], Counter())[row["drop_reason"]] += int(
                    row["count"]
                )
        return cls(
            stages=list(dropped),  # known stages in pipeline order, then any others
            documents_in=total,
            dropped={s: dict(sorted(c.items())) for s, c in dropped.items()},
        )

    @classmethod
    def from_table(cls, table: pa.Table, stages: Sequence[str]) -> Ledger:
        counts = count_outcomes(table)
        return cls.from_counts(counts.to_pylist(), stages)

    @property
    def documents_dropped(self) -> int:
        return sum(sum(r.values()) for r in self.dropped.values())

    @property
    def documents_kept(self) -> int:
        kept = self.documents_in - self.documents_dropped
        return kept

    @property
    def balanced(self) -> bool:
        return self.documents_kept >= 0 and (
            self.documents_in == self.documents_kept + self.documents_dropped
        )

    def per_stage(self) -> list[dict]:
        """In, kept and dropped (by reason) for each stage in order."""
        out, remaining = [], self.documents_in
        for stage in self.stages:
            reasons = self.dropped.get(stage, {})
            n_dropped = sum(reasons.values())
            out.append(
                {
                    "stage": stage,
                    "in": remaining,
                    "kept": remaining - n_dropped,
                    "dropped": n_dropped,
                    "reasons": reasons,
                }
            )
            remaining -= n_dropped
        return out

    def to_dict(self) -> dict:
        return {
            "documents_in": self.documents_in,
            "documents_kept": self.documents_kept,
            "documents_dropped": self.documents_dropped,
            "balanced": self.balanced,
            "stages": self.per_stage(),
        }

    def format(self) -> str:
        """A small text table for the end of a job."""
        lines = [
            f"documents in {self.documents_in} = kept {self.documents_kept}"
            f" + dropped {self.documents_dropped}"
            + ("" if self.balanced else "   (DOES NOT BALANCE)")
        ]
        width = max([10] + [len(stage) for stage in self.stages])
        for s in self.per_stage():
            lines.append(
                f"  {s['stage']:<{width}} in {s['in']:>7}  kept {s['kept']:>7}"
                f"  dropped {s['dropped']:>6}"
            )
            for reason, n in sorted(s["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {'':<{width}}   {n:>6}  {reason}")
        return "\n".join(lines)

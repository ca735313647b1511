"""The ledger: for every run, documents in = documents kept + documents dropped.

Counts come from the final rows of a run (every row that entered is still there, kept or
marked dropped by a stage), so the ledger balances by construction; :attr:`Ledger.balanced`
checks it anyway, and tests assert it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

__all__ = ["Ledger", "count_outcomes"]


def count_outcomes(batch: pa.Table) -> pa.Table:
    """Ray Data batch function: rows per (drop_stage, drop_reason); nulls mean kept."""
    grouped = batch.select(["drop_stage", "drop_reason"]).group_by(
        ["drop_stage", "drop_reason"], use_threads=False
    )
    return grouped.aggregate([([], "count_all")]).rename_columns(
        ["drop_stage", "drop_reason", "count"]
    )


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
        for s in self.per_stage():
            lines.append(
                f"  {s['stage']:<10} in {s['in']:>7}  kept {s['kept']:>7}  dropped {s['dropped']:>6}"
            )
            for reason, n in sorted(s["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {'':<10}   {n:>6}  {reason}")
        return "\n".join(lines)

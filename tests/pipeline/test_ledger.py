"""The ledger balances and reports per stage."""

from __future__ import annotations

from pipeline.ledger import Ledger
from pipeline.records import make_document, mark_dropped, to_table


def test_ledger_counts_by_stage_and_reason():
    docs = [make_document("web", str(i), text="x") for i in range(6)]
    mark_dropped(docs[0], "read", "read_error:OSError")
    mark_dropped(docs[1], "language", "language:xx")
    mark_dropped(docs[2], "language", "language:xx")
    mark_dropped(docs[3], "dedup", "near_duplicate")
    ledger = Ledger.from_table(to_table(docs), ["read", "extract", "language", "dedup"])
    assert ledger.balanced
    assert (ledger.documents_in, ledger.documents_kept, ledger.documents_dropped) == (6, 2, 4)
    stages = {s["stage"]: s for s in ledger.per_stage()}
    assert stages["extract"] == {
        "stage": "extract",
        "in": 5,
        "kept": 5,
        "dropped": 0,
        "reasons": {},
    }
    assert stages["language"]["reasons"] == {"language:xx": 2}
    assert stages["dedup"]["in"] == 3 and stages["dedup"]["kept"] == 2
    assert "documents in 6 = kept 2 + dropped 4" in ledger.format()

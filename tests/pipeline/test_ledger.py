"""The ledger balances and reports per stage."""

from __future__ import annotations

from pipeline.ledger import Ledger, counter_sums, merge_reject_samples, sample_rejects, sum_counters
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


def test_reject_samples_keep_a_few_per_reason():
    docs = [
        make_document("web", str(i), text=f"page {i}", meta={"title": f"T{i}"}) for i in range(9)
    ]
    for d in docs[:7]:
        mark_dropped(d, "c4", "curly_bracket")
    mark_dropped(docs[7], "fineweb", "line_punct_ratio")
    table = to_table(docs)
    # Two batches, as Ray would hand them over: the merge still keeps five per reason.
    parts = [sample_rejects(table.slice(0, 4)), sample_rejects(table.slice(4))]
    rows = merge_reject_samples(r for part in parts for r in part.to_pylist())
    assert [(r["stage"], r["reason"]) for r in rows] == [("c4", "curly_bracket")] * 5 + [
        ("fineweb", "line_punct_ratio")
    ]
    assert rows[0]["title"] == "T0" and rows[0]["meta"] == {"title": "T0"}
    assert rows[0]["text"] == "page 0"


def test_counters_are_summed_over_batches():
    docs = [make_document("web", str(i), text="x") for i in range(3)]
    docs[0]["meta"]["pii_emails"] = "2"
    docs[2]["meta"]["pii_emails"] = "1"
    docs[2]["meta"]["c4_lines_removed"] = "5"
    table = to_table(docs)
    rows = counter_sums(table.slice(0, 2)).to_pylist() + counter_sums(table.slice(2)).to_pylist()
    assert sum_counters(rows) == {"c4_lines_removed": 5, "pii_emails": 3}


def test_long_stage_names_line_up():
    docs = [make_document("web", str(i), text="x") for i in range(2)]
    mark_dropped(docs[0], "gopher_repetition", "dup_line_fraction")
    text = Ledger.from_table(to_table(docs), ["read", "gopher_repetition"]).format()
    lines = text.splitlines()
    assert lines[1].index(" in ") == lines[2].index(" in ")

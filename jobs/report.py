"""A run as one local HTML page with PNG plots, for users without a wandb account.

    kiln report RUN            RUN is a run name under <output_dir>/runs/ or a run folder

It reads what a run already wrote: ``state.json``, ``train/train_log.jsonl``, ``eval.json``,
and the data job's ``ledger.json``/``stats.json``/``rejects_sample.jsonl`` (under
``store/runs/<run>/``), and writes ``<run>/report/index.html`` beside PNG files drawn with
matplotlib's Agg backend (no display needed). A part the run did not produce (a run with only
the data step, say) gets a line saying so instead of a plot.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["ReportError", "build_report", "find_run_dir", "load_run"]

# Training metrics worth a plot each: (key in train_log.jsonl, title, y label, file name).
TRAIN_PLOTS = (
    ("loss", "Training loss", "loss", "loss.png"),
    ("lr", "Learning rate", "learning rate", "lr.png"),
    ("tokens_per_s", "Throughput", "tokens/s", "tokens_per_s.png"),
)


class ReportError(FileNotFoundError):
    """The run to report on cannot be found, or holds nothing to report."""


def find_run_dir(run: str | os.PathLike, output_dir: str | os.PathLike = "kiln-out") -> Path:
    """A run folder from a path to it or a run name under ``<output_dir>/runs``."""
    as_path = Path(run)
    if (as_path / "state.json").exists() or (as_path / "train").is_dir():
        return as_path.resolve()
    by_name = Path(output_dir) / "runs" / str(run)
    if by_name.is_dir():
        return by_name.resolve()
    runs = Path(output_dir) / "runs"
    known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    hint = f"; runs there: {', '.join(known[-5:])}" if known else ""
    raise ReportError(f"no run {str(run)!r}: not a run folder, nor a run under {runs}{hint}")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def load_run(run_dir: Path) -> dict:
    """Everything the report shows, from the files the run wrote (missing parts are None)."""
    state = _read_json(run_dir / "state.json") or {}
    steps = state.get("steps", {})
    data_step = steps.get("data") or {}

    def recorded(path: str | None, default: Path) -> Path:
        # state.json holds absolute paths of the machine that ran the job; where the output
        # folder is mounted elsewhere (a laptop reading a cluster's share), use the layout.
        return Path(path) if path and Path(path).exists() else default

    # The data job's own files live in the store, <output>/store/runs/<name>.
    data_dir = recorded(
        data_step.get("stage_outputs"), run_dir.parent.parent / "store" / "runs" / run_dir.name
    )
    ledger = data_step.get("ledger") or _read_json(data_dir / "ledger.json")
    stats = data_step.get("stats") or _read_json(data_dir / "stats.json")
    train_dir = recorded(steps.get("train", {}).get("train_dir"), run_dir / "train")
    eval_path = recorded(steps.get("eval", {}).get("eval_json"), run_dir / "eval.json")
    return {
        "name": state.get("name", run_dir.name),
        "state": state,
        "ledger": ledger,
        "stats": stats,
        "rejects_sample": _read_jsonl(data_dir / "rejects_sample.jsonl"),
        "train_log": _read_jsonl(train_dir / "train_log.jsonl"),
        "train_summary": _read_json(train_dir / "summary.json"),
        "eval": _read_json(eval_path),
    }


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a node with no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.grid(True, alpha=0.3)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _plot_series(rows: list[dict], key: str, title: str, ylabel: str, path: Path) -> bool:
    points = [
        (r["step"], r[key])
        for r in rows
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r
    ]
    if not points:
        return False
    plt, fig, ax = _figure()
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, marker="o" if len(points) < 30 else None, linewidth=1.5)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    if key == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if key == "tokens_per_s":
        ax.set_ylim(bottom=0)  # from zero, so step-to-step noise does not look like a collapse
    _save(plt, fig, path)
    return True


def _drops(ledger: dict | None) -> list[tuple[str, int]]:
    """(stage: reason, documents) for every reason that dropped something, largest first."""
    if not ledger:
        return []
    pairs = [
        (f"{s['stage']}: {reason}", n)
        for s in ledger.get("stages", [])
        for reason, n in s.get("reasons", {}).items()
        if n
    ]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def _plot_drops(drops: list[tuple[str, int]], path: Path) -> bool:
    if not drops:
        return False
    plt, fig, ax = _figure()
    fig.set_size_inches(6.4, max(2.4, 0.35 * len(drops) + 1.2))
    labels, counts = zip(*reversed(drops), strict=True)  # largest at the top
    ax.barh(labels, counts, color="#c0504d")
    ax.set(title="Documents dropped, by stage and reason", xlabel="documents")
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    _save(plt, fig, path)
    return True


def eval_scores(results: dict | None) -> list[tuple[str, float]]:
    """The headline numbers of eval.json: rates and accuracies (0-1) and the validation loss."""
    if not results:
        return []
    scores = []
    for section, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key in ("loss", "perplexity", "pass_rate", "accuracy") or key.endswith(
                ("_rate", "_accuracy", "_baseline")
            ):
                scores.append((f"{section}.{key}", float(value)))
    return scores


def _plot_eval(scores: list[tuple[str, float]], path: Path) -> bool:
    if not scores:
        return False
    plt, fig, ax = _figure()
    labels = [name for name, _ in scores]
    values = [value for _, value in scores]
    bars = ax.bar(range(len(values)), values, color="#4f81bd")
    ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
    ax.set(title="Evaluation scores")
    ax.grid(True, axis="y", alpha=0.3)
    ax.grid(False, axis="x")
    _save(plt, fig, path)
    return True


def _table(columns: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _img(name: str, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}" class="plot">'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.text, pre { white-space: pre-wrap; font-size: 0.85em; }
img.plot { display: block; max-width: 100%; margin: 0.5em 0 1.5em; }
.missing { color: #888; font-style: italic; }
"""


def build_report(
    run: str | os.PathLike, *, output_dir: str | os.PathLike = "kiln-out", out: str | None = None
) -> Path:
    """Write the run's report folder and return the path of its index.html."""
    run_dir = find_run_dir(run, output_dir)
    data = load_run(run_dir)
    if not (data["ledger"] or data["train_log"] or data["eval"]):
        raise ReportError(
            f"run {run_dir} has no ledger, training log or eval.json yet: nothing to report"
        )
    out_dir = Path(out) if out else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = data["name"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>kiln run {html.escape(name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>kiln run {html.escape(name)}</h1>",
    ]
    state = data["state"]
    if state:
        done = ", ".join(state.get("steps", {})) or "none"
        parts.append(
            f"<p>job <b>{html.escape(str(state.get('job', '?')))}</b>; steps finished: "
            f"{html.escape(done)}; {'finished' if state.get('finished') else 'not finished'}</p>"
        )

    parts.append(_data_section(data, out_dir))
    parts.append(_train_section(data, out_dir))
    parts.append(_eval_section(data, out_dir))
    if state.get("config"):
        parts.append(
            "<h2>Config</h2><details><summary>resolved job config</summary><pre>"
            + html.escape(json.dumps(state["config"], indent=2))
            + "</pre></details>"
        )
    parts.append("</body></html>")
    index = out_dir / "index.html"
    tmp = index.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(index)
    return index


def _data_section(data: dict, out_dir: Path) -> str:
    ledger = data["ledger"]
    parts = ["<h2>Data</h2>"]
    if not ledger:
        return parts[0] + "<p class='missing'>no data step in this run</p>"
    parts.append(
        f"<p>documents in {ledger['documents_in']:,} = kept {ledger['documents_kept']:,} + "
        f"dropped {ledger['documents_dropped']:,}"
        + ("" if ledger.get("balanced", True) else " <b>(does not balance)</b>")
        + "</p>"
    )
    version = (data["state"].get("steps", {}).get("data") or {}).get("version_dir")
    if version:
        parts.append(f"<p>dataset version <code>{html.escape(version)}</code></p>")
    parts.append(
        _table(
            ["stage", "in", "kept", "dropped", "reasons"],
            [
                [
                    s["stage"],
                    s["in"],
                    s["kept"],
                    s["dropped"],
                    ", ".join(f"{r} {n}" for r, n in sorted(s["reasons"].items())),
                ]
                for s in ledger.get("stages", [])
            ],
        )
    )
    if _plot_drops(_drops(ledger), out_dir / "drops.png"):
        parts.append(_img("drops.png", "documents dropped by reason"))
    else:
        parts.append("<p class='missing'>no document was dropped</p>")
    samples = data["rejects_sample"]
    if samples:
        parts.append("<h3>Rejected documents, a sample per reason</h3>")
        rows = [
            [
                r.get("stage"),
                r.get("reason"),
                r.get("url") or r.get("source"),
                r.get("text", "")[:300],
            ]
            for r in samples
        ]
        parts.append(_table(["stage", "reason", "url", "text (start)"], rows))
    return "\n".join(parts)


def _train_section(data: dict, out_dir: Path) -> str:
    rows = data["train_log"]
    parts = ["<h2>Training</h2>"]
    if not rows:
        return parts[0] + "<p class='missing'>no training log in this run</p>"
    last = rows[-1]
    parts.append(
        f"<p>{len(rows)} logged steps; last: step {last.get('step')}, loss "
        f"{_cell(last.get('loss'))}, {_cell(last.get('tokens_per_s'))} tokens/s</p>"
    )
    for key, title, ylabel, filename in TRAIN_PLOTS:
        if _plot_series(rows, key, title, ylabel, out_dir / filename):
            parts.append(_img(filename, title))
        else:
            parts.append(f"<p class='missing'>no {html.escape(key)} values logged</p>")
    return "\n".join(parts)


def _eval_section(data: dict, out_dir: Path) -> str:
    results = data["eval"]
    parts = ["<h2>Evaluation</h2>"]
    if not results:
        return parts[0] + "<p class='missing'>no eval.json in this run</p>"
    scores = eval_scores(results)
    parts.append(_table(["score", "value"], [[k, v] for k, v in scores]))
    # Rates and accuracies share a 0-1 axis; a loss or perplexity beside them would flatten
    # them, so those are plotted only when there is nothing else.
    rates = [(k, v) for k, v in scores if not k.endswith((".loss", ".perplexity"))]
    if _plot_eval(rates or scores, out_dir / "eval_scores.png"):
        parts.append(_img("eval_scores.png", "evaluation scores"))
    cases = (results.get("generation") or {}).get("cases") or []
    if cases:
        parts.append("<h3>Generations</h3>")
        parts.append(
            _table(
                ["prompt", "mode", "continuation", "passed"],
                [
                    [c.get("prompt"), c.get("mode"), c.get("continuation"), c.get("passed")]
                    for c in cases
                ],
            )
        )
    return "\n".join(parts)

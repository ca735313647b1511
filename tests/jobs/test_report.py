"""`kiln report`: a run rendered as HTML with PNG plots, checked in a real headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.report import build_report, eval_scores
from pipeline.ledger import Ledger

PLOTS = ("drops.png", "loss.png", "lr.png", "tokens_per_s.png", "eval_scores.png")


def write_run(output_dir: Path, name: str = "demo-20261203-120000") -> Path:
    """A run folder in the layout `kiln run` writes (state.json, train log, ledger, eval)."""
    run_dir = output_dir / "runs" / name
    data_dir = output_dir / "store" / "runs" / name
    (run_dir / "train").mkdir(parents=True)
    data_dir.mkdir(parents=True)
    ledger = Ledger.from_counts(
        [
            {"count": 40, "drop_stage": None, "drop_reason": None},
            {"count": 3, "drop_stage": "length", "drop_reason": "too_short"},
            {"count": 2, "drop_stage": "language", "drop_reason": "language_not_allowed"},
            {"count": 4, "drop_stage": "dedup", "drop_reason": "near_duplicate"},
            {"count": 1, "drop_stage": "pii", "drop_reason": "<script>alert(1)</script>"},
        ],
        ["extract", "length", "language", "dedup", "pii"],
    ).to_dict()
    (data_dir / "ledger.json").write_text(json.dumps(ledger))
    (data_dir / "rejects_sample.jsonl").write_text(
        json.dumps(
            {"stage": "length", "reason": "too_short", "url": "https://example.com/a", "text": "Hi"}
        )
        + "\n"
    )
    rows = [
        {
            "step": step,
            "loss": 9.0 * math.exp(-step / 40) + 2.0,
            "lr": 3e-3 * min(1.0, step / 30),
            "grad_norm": 1.0,
            "tokens_per_s": 12000 + 100 * (step % 3),
            "mfu": None,
        }
        for step in (1, 25, 50, 75, 100)
    ]
    (run_dir / "train" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {
        "validation": {"loss": 3.1, "perplexity": 22.2, "tokens": 5000},
        "generation": {
            "cases": [
                {
                    "prompt": "The Time Traveller",
                    "mode": "greedy",
                    "continuation": " was <b>here</b>",
                    "stop_reason": "max_new_tokens",
                    "passed": True,
                }
            ],
            "passed": 1,
            "total": 1,
            "pass_rate": 1.0,
        },
        "cloze": {"items": 10, "accuracy": 0.3, "most_frequent_word_baseline": 0.1},
    }
    (run_dir / "eval.json").write_text(json.dumps(results))
    state = {
        "name": name,
        "job": "demo",
        "finished": True,
        "config": {"train": {"max_steps": 100}},
        "steps": {
            "data": {"ledger": ledger, "stage_outputs": str(data_dir), "version_dir": "v0001"},
            "train": {"train_dir": str(run_dir / "train")},
            "eval": {"eval_json": str(run_dir / "eval.json")},
        },
    }
    (run_dir / "state.json").write_text(json.dumps(state))
    return run_dir


def test_report_writes_html_and_every_plot(tmp_path):
    run_dir = write_run(tmp_path / "kiln-out")
    index = build_report(run_dir.name, output_dir=tmp_path / "kiln-out")
    assert index == run_dir / "report" / "index.html"
    page = index.read_text()
    for name in PLOTS:
        png = index.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f'src="{name}"' in page
    # Text from the run is escaped, never markup.
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "documents in 50 = kept 40 + dropped 10" in page


def test_report_of_a_data_only_run_says_what_is_missing(tmp_path):
    run_dir = write_run(tmp_path / "out")
    shutil.rmtree(run_dir / "train")
    (run_dir / "eval.json").unlink()
    state = json.loads((run_dir / "state.json").read_text())
    del state["steps"]["train"], state["steps"]["eval"]
    (run_dir / "state.json").write_text(json.dumps(state))
    page = build_report(run_dir).read_text()
    assert "no training log in this run" in page and "no eval.json in this run" in page
    assert not (run_dir / "report" / "loss.png").exists()


def test_eval_scores_pick_the_headline_numbers():
    scores = dict(eval_scores({"cloze": {"accuracy": 0.5, "items": 9}, "x": 3}))
    assert scores == {"cloze.accuracy": 0.5}


def test_kiln_report_cli(tmp_path, capsys):
    write_run(tmp_path / "kiln-out", name="r1")
    assert main(["report", "r1", "--output-dir", str(tmp_path / "kiln-out")]) == 0
    assert "report written to" in capsys.readouterr().out
    assert main(["report", "nope", "--output-dir", str(tmp_path / "kiln-out")]) == 2
    assert "runs there: r1" in capsys.readouterr().err


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.slow
def test_report_plots_load_in_headless_chromium(tmp_path):
    found = _chromium()
    if found is None:
        pytest.skip(
            "no chromium and chromedriver on PATH (Debian: apt-get install chromium "
            "chromium-driver; `make browser` does it as root)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    index = build_report(write_run(tmp_path / "kiln-out"))
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(index.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => "
            "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth,"
            "  height: i.naturalHeight}))"
        )
        title = driver.title
    finally:
        driver.quit()
    assert title.startswith("kiln run")
    assert sorted(i["src"] for i in images) == sorted(PLOTS)
    for image in images:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image


def test_report_of_an_output_folder_moved_elsewhere(tmp_path):
    """state.json's absolute paths are the job machine's; a copy elsewhere still reports."""
    write_run(tmp_path / "cluster" / "kiln-out", name="r2")
    shutil.move(tmp_path / "cluster" / "kiln-out", tmp_path / "laptop")
    index = build_report("r2", output_dir=tmp_path / "laptop")
    page = index.read_text()
    assert "no training log" not in page and "no eval.json" not in page
    assert "Rejected documents" in page
    assert all((index.parent / name).exists() for name in PLOTS)

"""Job configs: validation before any work, overrides, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import DEFAULT_CONFIG, ConfigError, apply_overrides, load_job_config
from tests.helpers import SAMPLE


def test_default_config_points_at_the_bundled_sample():
    cfg = load_job_config()
    paths = [Path(spec.path) for spec in cfg.data.inputs]
    assert paths == [SAMPLE / "web", SAMPLE / "warc", SAMPLE / "books"]
    assert cfg.train.zero_stage == 2 and cfg.train.num_workers == 2


def test_overrides_are_typed():
    cfg = load_job_config(
        DEFAULT_CONFIG,
        [
            "train.max_steps=50",
            "train.lr=1e-3",
            "data.filter.languages=[en, de]",
            "model.block_size=128",
            "data.dedup.enabled=false",
            "data.inputs.0.kind=auto",
        ],
    )
    assert cfg.train.max_steps == 50 and cfg.train.lr == 1e-3
    assert cfg.data.filter.languages == ["en", "de"]
    assert cfg.model.resolved()["block_size"] == 128
    assert cfg.data.dedup.enabled is False
    assert cfg.data.inputs[0].kind == "auto"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_stepz=5", "train.max_stepz: unknown field"),
        ("train.zero_stage=4", "train.zero_stage: Input should be less than or equal to 3"),
        ("data.filter.min_language_score=2", "data.filter.min_language_score"),
        ("data.dedup.bands=15", "bands x rows"),
        # The default config sets bands and rows, so a threshold alone must say to drop them.
        ("data.dedup.threshold=0.8", "remove them"),
        ("model.n_head=5", "divisible by n_head"),
        ("train.min_lr=1", "min_lr"),
        ("wandb.mode=sometimes", "wandb.mode"),
        ("data.inputs.7.path=x", "not an index"),
        ("train", "not of the form key=value"),
    ],
)
def test_bad_fields_fail_early_and_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_job_config(DEFAULT_CONFIG, [override])


def test_unknown_top_level_section(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ndata:\n  inputs: [{path: a}]\ntrainer: {}\n")
    with pytest.raises(ConfigError, match="trainer: unknown field"):
        load_job_config(path)


def test_relative_inputs_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("data:\n  inputs: [{path: pages}]\n")
    cfg = load_job_config(path)
    assert cfg.data.inputs[0].path == str(tmp_path / "pages")


def test_apply_overrides_does_not_touch_the_original():
    raw = {"train": {"max_steps": 1}}
    assert apply_overrides(raw, ["train.max_steps=2"])["train"]["max_steps"] == 2
    assert raw["train"]["max_steps"] == 1


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_job_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job_config(bad)


def test_crawl_section_and_new_input_kinds(tmp_path):
    path = tmp_path / "crawl.yaml"
    path.write_text(
        "data:\n"
        "  inputs:\n"
        "    - {path: someone/some-dataset, kind: hf, text_field: content}\n"
        "    - {path: lists/warc.paths.gz, kind: cc_paths, base: mirror}\n"
        "  crawl:\n"
        "    seeds: [https://example.org/]\n"
        "    max_depth: 2\n"
    )
    cfg = load_job_config(path)
    hub, listing = cfg.data.inputs
    assert hub.path == "someone/some-dataset"  # a hub name is not a local path
    assert listing.path == str(tmp_path / "lists" / "warc.paths.gz")
    assert listing.base == str(tmp_path / "mirror")
    assert cfg.data.crawl.seeds == ["https://example.org/"] and cfg.data.crawl.max_depth == 2


@pytest.mark.parametrize(
    "crawl, message",
    [
        ("{}", "at least one seed"),
        ("{seeds: [ftp://x/]}", "not an http"),
        ("{seeds: [http://x/], allow_networks: [nonsense]}", "not a CIDR"),
        ("{seeds: [http://x/], max_concurrency_per_host: 0}", "max_concurrency_per_host"),
    ],
)
def test_bad_crawl_config_is_refused_before_any_work(tmp_path, crawl, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"data:\n  crawl: {crawl}\n")
    with pytest.raises(ConfigError, match=message):
        load_job_config(path)


def test_data_needs_inputs_or_a_crawl(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("data: {dataset_name: x}\n")
    with pytest.raises(ConfigError, match="inputs, a crawl, or both"):
        load_job_config(path)


def test_decontamination_defaults_to_the_eval_prompts_and_files_resolve(tmp_path):
    cfg = load_job_config()
    assert cfg.data.decontam.texts == cfg.eval.prompts
    own = load_job_config(DEFAULT_CONFIG, ["data.decontam.texts=[a b c]", "eval.prompts=[x]"])
    assert own.data.decontam.texts == ["a b c"]
    job = tmp_path / "job.yaml"
    job.write_text(
        "data:\n  inputs: [{path: pages}]\n  decontam: {files: [evals/lambada.jsonl]}\n"
        "eval: {prompts: [Once upon a time]}\n"
    )
    cfg = load_job_config(job)
    assert cfg.data.decontam.files == [str(tmp_path / "evals" / "lambada.jsonl")]
    assert cfg.data.decontam.texts == ["Once upon a time"]


def test_quality_thresholds_are_validated():
    cfg = load_job_config(
        DEFAULT_CONFIG,
        ["data.quality.gopher_repetition.max_top_ngram_char_fraction={2: 0.3}"],
    )
    assert cfg.data.quality.gopher_repetition.max_top_ngram_char_fraction == {2: 0.3}
    with pytest.raises(ConfigError, match="data.quality.fineweb.max_short_line_fraction"):
        load_job_config(DEFAULT_CONFIG, ["data.quality.fineweb.max_short_line_fraction=2"])

"""The kiln command line: help, dry runs and errors."""

from __future__ import annotations

import json

import pytest

from jobs.cli import main


def test_kiln_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "data", "train", "eval"):
        assert command in out
    assert "examples:" in out


def test_kiln_run_help_explains_overrides_and_flags(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for word in ("--dry-run", "--resume", "--run-name", "key=value", "demo.yaml"):
        assert word in out


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["run", "--dry-run", "train.max_steps=7"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["max_steps"] == 7
    assert cfg["data"]["inputs"][0]["path"].endswith("sample/web")


def test_bad_override_exits_2_naming_the_field(capsys):
    assert main(["run", "train.zero_stage=9"]) == 2
    assert "train.zero_stage" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: kiln" in capsys.readouterr().out


def test_eval_of_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "missing model.pt" in capsys.readouterr().err


def test_train_on_a_folder_that_is_not_a_dataset_records_no_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--dataset", str(tmp_path), f"output_dir={out}"]) == 2
    assert "not a dataset version" in capsys.readouterr().err
    assert not (out / "runs").exists()

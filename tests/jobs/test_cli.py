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


def test_resume_of_a_named_run_that_does_not_exist_starts_it(tmp_path, monkeypatch, capsys):
    """A retried job (a RayJob's backoffLimit, a requeued Slurm job) runs one fixed command,
    `--run-name NAME --resume`: the first attempt starts the run, a later one continues it, and
    without --resume the name is still refused. The training step is stood in for; what is
    checked is the run's bookkeeping (tests/test_end_to_end.py resumes a real run)."""
    import jobs.run

    version = tmp_path / "version"
    version.mkdir()
    (version / "manifest.json").write_text(json.dumps({"tokenizer": {"path": "tok.json"}}))
    trained = []

    def fake_train_step(cfg, paths, version_dir, tokenizer_path):
        trained.append(paths.name)
        final = paths.train_dir / "final"
        return {"final_dir": str(final), "first_logged_loss": 5.0, "final_loss": 4.0, "steps": 2}

    monkeypatch.setattr(jobs.run, "_train_step", fake_train_step)
    out = tmp_path / "out"
    argv = ["train", "--dataset", str(version), f"output_dir={out}", "--run-name", "retried"]

    assert main([*argv, "--resume"]) == 0  # nothing to resume yet: started
    state = json.loads((out / "runs" / "retried" / "state.json").read_text())
    assert state["finished"] and state["steps"]["train"]["steps"] == 2
    assert main([*argv, "--resume"]) == 0  # the retry finds the step done
    assert trained == ["retried"]
    capsys.readouterr()

    assert main(argv) == 2  # the same name without --resume is refused
    assert "already exists" in capsys.readouterr().err
    # With no name there is nothing to start: --resume alone still needs an unfinished run.
    assert main(["train", "--dataset", str(version), f"output_dir={out}", "--resume"]) == 2
    assert "no unfinished run" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", ".hidden", "x" * 200])
def test_run_and_dataset_names_cannot_leave_their_folder(name, capsys):
    # Both become one folder name under the output directory or the store.
    with pytest.raises(SystemExit) as exc:
        main(["data", "--run-name", name, "--dry-run"])
    assert exc.value.code == 2 and "--run-name" in capsys.readouterr().err
    assert main(["data", f"data.dataset_name={name}", "--dry-run"]) == 2
    assert "data.dataset_name" in capsys.readouterr().err


def test_an_input_folder_with_nothing_to_read_names_the_inputs(tmp_path):
    from pipeline.config import DataConfig
    from pipeline.runner import resolve_inputs
    from pipeline.store import DatasetStore

    cfg = DataConfig(inputs=[{"path": str(tmp_path / "empty"), "kind": "html"}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no readable file in the inputs") as exc:
        resolve_inputs(cfg, DatasetStore(tmp_path / "store"))
    assert str(tmp_path / "empty") in str(exc.value) and "crawl" not in str(exc.value)

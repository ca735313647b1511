"""One training worker under torchrun or the deepspeed launcher.

    python -m jobs.train_entry --config <out_dir>/worker.json

The launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for each process;
this reads the worker config that jobs/launch.py wrote and runs the same function Ray Train
workers run (jobs.launch.run_worker). Users normally let ``kiln train`` start it; on a cluster
without Ray, run the same command under torchrun on every node (see README, "Launchers").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_entry", description=__doc__)
    parser.add_argument("--config", required=True, help="worker.json written by kiln")
    # The deepspeed launcher passes --local_rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    path = Path(args.config)
    if not path.exists():
        parser.error(f"worker config {path} does not exist")
    config = json.loads(path.read_text())
    if not config["train"]["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is first imported
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from jobs.launch import run_worker

    run_worker(config, int(os.environ.get("RANK", "0")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

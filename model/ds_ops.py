"""DeepSpeed's just-in-time compiled ops: where they are cached, and building them ahead of time.

On the CPU, DeepSpeed compiles a shared-memory communication op with g++ the first time a
process group starts (about a minute), and caches it under ``TORCH_EXTENSIONS_DIR``. Two things
bite with torch's default cache, ``~/.cache/torch_extensions``:

- virtual environments with different paths share it, and each rebuilds the op for itself;
- a process killed while building leaves a ``lock`` file that makes every later build wait
  forever.

So kiln keeps the cache inside the virtual environment, and ``make install`` builds the op once
(``python -m model.ds_ops``) so that training never compiles, and never waits on a lock.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["extensions_dir", "prebuild_cpu_ops", "use_private_extensions_dir"]

log = logging.getLogger(__name__)


def extensions_dir() -> Path:
    """The cache kiln uses: ``$TORCH_EXTENSIONS_DIR`` if set, else one inside this environment."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    return Path(sys.prefix) / "torch_extensions"


def use_private_extensions_dir() -> Path:
    """Point ``TORCH_EXTENSIONS_DIR`` at this environment's cache (unless the user set one).

    Called by the ``kiln`` command before Ray starts, so every worker inherits it.
    """
    path = extensions_dir()
    os.environ["TORCH_EXTENSIONS_DIR"] = str(path)
    return path


def prebuild_cpu_ops() -> list[str]:
    """Compile the ops a CPU run of kiln loads; returns their names. No-op with a GPU."""
    import torch

    if torch.cuda.is_available():
        return []  # GPU runs load CUDA ops, built by the container image or on first use
    use_private_extensions_dir()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not builder.is_compatible():
        return []
    builder.load(verbose=False)
    return [builder.absolute_name()]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = prebuild_cpu_ops()
    print(f"DeepSpeed ops ready in {extensions_dir()}: {', '.join(built) or 'none needed'}")

"""Peak dense FLOP/s per accelerator, for model FLOPs utilisation (MFU).

MFU = achieved model FLOPs per second / peak FLOPs per second. The model FLOPs per token are
``GPT.flops_per_token`` (6N plus the attention term). Peak figures are the vendors' dense
(no structured sparsity) tensor-core numbers from their datasheets.
"""

from __future__ import annotations

import torch

__all__ = ["PEAK_BF16_FLOPS", "peak_flops_per_second"]

# Dense BF16 tensor-core peak, FLOP/s (NVIDIA datasheets; SXM parts).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989.4e12,
    "H100": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "L4": 121e12,
    "A10G": 70e12,
}


def peak_flops_per_second(device: torch.device, *, bf16: bool) -> float | None:
    """Peak for the device, or None where MFU means nothing here (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in name:
            # TF32 tensor cores run at half the BF16 rate on these parts.
            return peak if bf16 else peak / 2
    return None

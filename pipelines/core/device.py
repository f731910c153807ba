"""Where tensors go: ``auto`` picks CUDA when present, on every path that trains or encodes."""

from __future__ import annotations

import torch


class DeviceUnavailableError(RuntimeError):
    """CUDA was asked for explicitly but this machine has none."""


def resolve_device(requested: str = "auto") -> torch.device:
    """Turn ``auto | cpu | cuda[:n]`` into a device; ``auto`` prefers CUDA.

    Asking for CUDA where there is none is an error, not a silent CPU run: a
    config that says GPU and quietly takes 50x longer hides a broken machine.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {requested!r} was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}); use device 'auto' or 'cpu'."
            )
        return torch.device(requested)
    raise ValueError(f"unknown device {requested!r}: expected 'auto', 'cpu' or 'cuda'")

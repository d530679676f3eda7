"""What a benchmark result must carry to be read later: device, versions, commit, date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

from ..backends.cpp.loader import cpp_variant
from ..backends.cpu_features import cpu_model, has_native_bf16


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe(device: torch.device) -> dict:
    """Date, commit, versions and the device (CPU: model, threads, native bf16, the C++ kernels' ISA variant)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = cpu_model()
        info["cpu_threads"] = torch.get_num_threads()
        info["cpu_native_bf16"] = has_native_bf16()
        info["cpp_variant"] = cpp_variant()  # None: not built or disabled
        info["load_average"] = os.getloadavg()  # 1, 5, 15 min: other work on the machine skews CPU timings
    return info


def slug(info: dict) -> str:
    """File-name-safe 'device-date' for results files."""
    name = "".join(c if c.isalnum() else "-" for c in info["device_name"].lower()).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    return f"{name}-{info['date'][:10]}"

"""What the numbers were measured on: CPU, cores, memory, versions, and whether the box was busy."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from typing import Any

import psutil

PACKAGES = (
    "onnxruntime",
    "tokenizers",
    "numpy",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "locust",
    "transformers",
    "tensorflow-cpu",
    "torch",
    "optimum",
    "optimum-onnx",
)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD flags that decide int8 speed (AVX2, AVX-512, VNNI)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers (None when absent)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def busy_processes() -> list[str]:
    """Other heavy Python jobs (a training run) that would distort a benchmark."""
    try:
        out = subprocess.run(
            ["pgrep", "-af", "python -m (training|export)"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in out.splitlines() if line.strip() and str(os.getpid()) not in line]


def machine_info() -> dict[str, Any]:
    """Everything a reader needs to judge whether a result applies to their machine."""
    memory = psutil.virtual_memory()
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(memory.total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1m": os.getloadavg()[0],
        "busy_processes": busy_processes(),
        "versions": versions(),
    }


def describe(info: dict[str, Any]) -> str:
    """A two-line human summary printed at the start of a run."""
    present = {k: v for k, v in info["versions"].items() if v}
    lines = [
        f"machine: {info['cpu_model']} ({info['logical_cores']} logical / "
        f"{info['physical_cores']} physical cores, {info['memory_gb']} GB, "
        f"{' '.join(info['cpu_flags']) or 'no AVX2'}), {info['os']}, Python {info['python']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in present.items()),
    ]
    if info["busy_processes"]:
        lines.append("WARNING: other heavy jobs are running, numbers are not clean:")
        lines.extend("  " + line for line in info["busy_processes"])
    return "\n".join(lines)

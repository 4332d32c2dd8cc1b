"""Shared helpers for the benchmarks: interleaved timing, stats, machine info.

Timings on shared machines are noisy, so every benchmark runs its
variants interleaved in one process (round r times variant A, then B, ...,
then round r + 1), computes each round's ratio against the round's baseline
and reports the median and the range of those ratios.
"""

import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def sync(value):
    """Waits for a (possibly asynchronous) result: TF, JAX or torch."""
    leaves = value if isinstance(value, (list, tuple)) else [value]
    for leaf in leaves:
        if leaf is None:
            continue
        module = type(leaf).__module__
        if module.startswith("torch"):
            if leaf.is_cuda:
                import torch

                torch.cuda.synchronize()
        elif module.startswith("jax") or hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
        elif module.startswith("tensorflow"):
            import tensorflow as tf

            # One element back to the host forces the computation.
            tf.reshape(leaf, [-1])[:1].numpy()
    return value


def time_call(fn, reps):
    """Mean seconds per call over `reps` calls (synchronised at the end).

    A variant with a `remote_time(reps)` method (a worker process) times
    itself and returns the seconds.
    """
    if hasattr(fn, "remote_time"):
        return fn.remote_time(reps)
    start = time.perf_counter()
    out = None
    for _ in range(reps):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / reps


def interleaved(variants, rounds, reps, warmup=2, log=None):
    """Times each variant once per round, round-robin. Returns name -> [s]."""
    for name, fn in variants.items():
        for _ in range(warmup):
            if hasattr(fn, "remote_time"):
                fn.remote_time(1)
            else:
                sync(fn())
    times = {name: [] for name in variants}
    for r in range(rounds):
        # Rotate the order each round so no variant always runs first.
        names = list(variants)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            times[name].append(time_call(variants[name], reps))
        if log:
            log(
                f"  round {r + 1}/{rounds}: "
                + ", ".join(
                    f"{n} {times[n][-1] * 1e3:.1f} ms" for n in variants
                )
            )
    return times


def summary(values):
    values = sorted(values)
    q = (
        statistics.quantiles(values, n=4)
        if len(values) >= 2
        else [values[0]] * 3
    )
    return {
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "q1": q[0],
        "q3": q[2],
        "n": len(values),
    }


def ratios(times, name, baseline):
    return [a / b for a, b in zip(times[name], times[baseline])]


def fmt_ratio(s):
    return f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"


def fmt_ms(s):
    return f"{s['median'] * 1e3:.1f}"


def machine():
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_average_at_start": os.getloadavg()[0]
        if hasattr(os, "getloadavg")
        else None,
    }
    for module in ("keras", "tensorflow", "jax", "torch", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    import keras

    info["keras_backend"] = keras.backend.backend()
    info["gpu"] = _gpu_name()
    return info


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_name():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def save_result(name, payload, out_dir=None):
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def log(message):
    print(message, flush=True)
    sys.stdout.flush()


def import_other_checkout(directory, module, alias="keras_sge_other"):
    """Imports `module` of DIR/keras_sge (another checkout) beside this keras_sge.

    A renamed copy: every `keras_sge` in its sources (imports, the
    serialization package) becomes `alias`, so the two share no module and
    can be timed interleaved in one process (a before/after comparison).
    """
    source = Path(directory) / "keras_sge"
    if not source.is_dir():
        raise SystemExit(
            f"--compare-with: {directory!r} has no keras_sge package"
        )
    if alias not in sys.modules:
        target = Path(tempfile.mkdtemp()) / alias
        shutil.copytree(source, target)
        for path in target.rglob("*.py"):
            path.write_text(re.sub(r"\bkeras_sge\b", alias, path.read_text()))
        sys.path.insert(0, str(target.parent))
    return importlib.import_module(f"{alias}.{module}")

"""Helpers to run `examples/train.py` in subprocesses, as a user would."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys

import keras

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
TRAIN_PY = os.path.join(REPO_ROOT, "examples", "train.py")

# Small and quick: SGE-ResNet-18 at 32x32 on the embedded digits, one
# TensorFlow thread per process, no progress bar.
QUICK = [
    "--arch",
    "resnet18",
    "--image-size",
    "32",
    "--threads",
    "1",
    "--verbose",
    "2",
]


def import_train_script():
    """examples/train.py imported as a module, to call its functions in-process."""
    spec = importlib.util.spec_from_file_location("train", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main_in_process(args, capsys):
    """Runs train.py's `main(args)` in this process; returns (status, output).

    The same code as `run`, without an interpreter to start and TensorFlow
    to import, for runs that need no process of their own (one to kill,
    a TF_CONFIG, logical devices). The output is stdout and stderr
    together, as a subprocess's. `--threads` is left out: TensorFlow is
    already running here, and its thread pools cannot change.
    """
    args = list(args)
    if "--threads" in args:
        del args[args.index("--threads") : args.index("--threads") + 2]
    capsys.readouterr()  # only this run's output
    # Keras's automatic layer names count up per session: the run and what
    # the test builds after it get the names a fresh process would.
    keras.backend.clear_session(free_memory=False)
    status = import_train_script().main(args)
    keras.backend.clear_session(free_memory=False)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def run_in_process(args, capsys):
    """`main_in_process` for a run that must succeed; returns its output."""
    status, output = main_in_process(args, capsys)
    assert status == 0, f"train.py {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def environment(**extra):
    env = dict(
        os.environ,
        PYTHONPATH=REPO_ROOT,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def start(args, env=None, script=None):
    """Starts `train.py args` (or `python -c script args`); returns the Popen."""
    command = (
        [sys.executable, "-u"]
        + (["-c", script] if script else [TRAIN_PY])
        + list(args)
    )
    return subprocess.Popen(
        command,
        env=env or environment(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(args, env=None, timeout=300):
    """Runs `train.py args` to completion; returns its output, checks success."""
    process = start(args, env)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, (
        f"train.py {' '.join(args)} failed:\n{output[-4000:]}"
    )
    return output


def run_until(process, marker, timeout=300):
    """Reads the process's output until `marker`, SIGKILLs it, returns all output."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            process.send_signal(signal.SIGKILL)
            break
    lines.append(process.communicate(timeout=timeout)[0])
    assert process.returncode == -signal.SIGKILL, "".join(lines)[-4000:]
    return "".join(lines)


def free_ports(count):
    """Ports that were free a moment ago (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def final_model(output_dir):
    """A run's `model.keras`."""
    import keras_sge  # noqa: F401  (registers SGE for loading)

    return keras.saving.load_model(
        os.path.join(output_dir, "model.keras"), compile=False
    )

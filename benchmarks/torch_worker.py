"""A PyTorch-only worker process for the interleaved ResNet benchmark.

PyTorch and TensorFlow in one process slow PyTorch down several times on
this CPU (their thread pools fight), so bench_resnet.py runs the PyTorch
reference network (keras_sge/testing/torch_reference.py, imported) here, in a child
process that never imports TensorFlow, and drives it in lockstep: one JSON
command per line on stdin, one JSON answer per line on stdout.
"""

import json
import os
import sys
import time


def main():
    import numpy as np
    import torch

    from keras_sge.testing import torch_reference

    torch.set_num_threads(os.cpu_count())
    models, optimizers, data = {}, {}, {}
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(name, task):
        model = models[name]
        x, y = data[task]
        if task == "inference":
            model.eval()
            with torch.inference_mode():
                return model(x)
        model.train()
        optimizers[name].zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizers[name].step()
        return loss

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "build":
            groups = cmd["groups"]
            torch.manual_seed(0)
            models[cmd["name"]] = torch_reference.SGE_RESNETS[cmd["depth"]](
                groups=groups
            )
            optimizers[cmd["name"]] = torch.optim.SGD(
                models[cmd["name"]].parameters(), lr=0.01, momentum=0.9
            )
            reply = {
                "ok": True,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        elif cmd["cmd"] == "data":
            rng = np.random.default_rng(cmd["seed"])
            b, s = cmd["batch"], cmd["size"]
            x = torch.from_numpy(
                rng.uniform(-2, 2, (b, 3, s, s)).astype("float32")
            )
            y = torch.from_numpy(rng.integers(0, 1000, b))
            data[cmd["task"]] = (x, y)
            reply = {"ok": True}
        elif cmd["cmd"] == "time":
            start = time.perf_counter()
            for _ in range(cmd["reps"]):
                step(cmd["name"], cmd["task"])
            reply = {"seconds": (time.perf_counter() - start) / cmd["reps"]}
        elif cmd["cmd"] == "quit":
            break
        else:
            reply = {"error": f"unknown command {cmd}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

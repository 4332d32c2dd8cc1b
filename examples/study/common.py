"""What the two cluttered-digits studies share: the machine record and figures.

`examples/ablation.py` (the first study) and `examples.study.run` (the
second) both record what they ran on beside their raw results, and draw
their figures without pyplot's global state.
"""

import os
import platform

import numpy as np


def machine():
    """What a study ran on, for its raw results."""
    import keras
    import scipy
    import sklearn
    import tensorflow as tf

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def figure(figsize):
    """A Matplotlib figure outside pyplot: no global state, no display."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def outline_box(axes, box, colour, linewidth):
    """Draws a `(top, left, bottom, right)` pixel box around its pixels."""
    from matplotlib.patches import Rectangle

    top, left, bottom, right = box
    axes.add_patch(
        Rectangle(
            (left - 0.5, top - 0.5),
            right - left,
            bottom - top,
            fill=False,
            edgecolor=colour,
            linewidth=linewidth,
            zorder=3,
        )
    )

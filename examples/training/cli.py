"""What the example scripts' command lines share.

Imports nothing heavy: the scripts call `tensorflow_defaults()` before
TensorFlow loads.
"""

import argparse
import os


def tensorflow_defaults():
    """Sets the scripts' TensorFlow settings, unless the environment has them.

    Must run before TensorFlow is imported: it reads both at load time.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN's CPU kernels even where TensorFlow would leave them off (CPUs
    # without some vector extensions): training is several times faster
    # there, and TensorFlow's CPU Conv2D accepts channels_first only with
    # them.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


class OneLineParser(argparse.ArgumentParser):
    """Reports usage errors in one line, like the scripts' other errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

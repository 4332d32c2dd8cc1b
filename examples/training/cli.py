"""What the example scripts' command lines share."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """Reports usage errors in one line, like the scripts' other errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

"""Markers of the training-script tests."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs examples/train.py in subprocesses (tens of seconds)")

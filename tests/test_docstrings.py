"""Every public docstring example in keras_sge runs.

An example is a ```python block in the docstring of a module or of a public
class, function or method defined in keras_sge. Each runs in a fresh
namespace, in a scratch directory holding the files examples name: an
official-layout PyTorch checkpoint `sge_resnet18.pth.tar` (made here, with
random weights) and, once converted, the KerasHub preset
`sge_resnet18_imagenet`.
"""

import importlib
import inspect
import os
import pathlib
import re
import textwrap

import pytest

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent / "keras_sge"
EXAMPLE = re.compile(r"```python\n(.*?)```", re.S)
# Modules that need an optional extra: (module prefix, the extra's import).
OPTIONAL = {"keras_sge.hub": "keras_hub", "keras_sge.testing": "torch"}


def module_names():
    names = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def public_docstrings(module):
    """`(qualified name, docstring)` of the module and what it defines."""
    yield module.__name__, module.__doc__
    for name, obj in vars(module).items():
        if (
            name.startswith("_")
            or getattr(obj, "__module__", None) != module.__name__
        ):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj.__doc__
        if inspect.isclass(obj):
            for method_name, method in vars(obj).items():
                if not method_name.startswith("_") and inspect.isfunction(
                    method
                ):
                    yield (
                        f"{module.__name__}.{name}.{method_name}",
                        method.__doc__,
                    )


def examples():
    found = []
    for module_name in module_names():
        extra = next(
            (
                dep
                for prefix, dep in OPTIONAL.items()
                if module_name.startswith(prefix)
            ),
            None,
        )
        if extra and importlib.util.find_spec(extra) is None:
            continue
        module = importlib.import_module(module_name)
        for qualified_name, doc in public_docstrings(module):
            for index, code in enumerate(EXAMPLE.findall(doc or "")):
                found.append(
                    pytest.param(
                        textwrap.dedent(code), id=f"{qualified_name}[{index}]"
                    )
                )
    return found


@pytest.fixture(scope="module")
def example_files(tmp_path_factory):
    """A directory with the files the examples name."""
    directory = tmp_path_factory.mktemp("docstring_examples")
    if importlib.util.find_spec("torch") is not None:
        from keras_sge.testing import torch_reference
        from tests.applications import parity

        parity.save_official_checkpoint(
            torch_reference.sge_resnet18(), directory / "sge_resnet18.pth.tar"
        )
    return directory


@pytest.mark.timeout(600)
@pytest.mark.parametrize("code", examples())
def test_docstring_example_runs(code, example_files, monkeypatch):
    if ".pth" in code and not (example_files / "sge_resnet18.pth.tar").exists():
        pytest.skip(
            "the example reads a PyTorch checkpoint; torch is not installed"
        )
    monkeypatch.chdir(example_files)
    exec(
        compile(code, "<docstring example>", "exec"),
        {"__name__": "__docstring_example__"},
    )


def test_examples_are_found():
    ids = {param.id.rsplit("[", 1)[0] for param in examples()}
    for name in (
        "keras_sge.layers.sge.SGE",
        "keras_sge.applications.resnet.SGEResNet152",
    ):
        assert name in ids, sorted(ids)
    assert os.path.basename(__file__) == "test_docstrings.py"

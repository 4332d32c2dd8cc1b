"""The package's structure: an import graph without cycles, light imports.

Every `import` statement inside keras_sge counts, also those inside
functions: a cycle held together by a function-local import is still a
cycle in the design. `from package import name` depends on the submodule
`package.name` when there is one, else on the package's `__init__`.
"""

import ast
import pathlib

import keras
import pytest

from tests import harness

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent / "keras_sge"


def module_name(path):
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules():
    return {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def imported_modules(path, modules):
    """The keras_sge modules that `path` imports, anywhere in the file."""
    found = set()
    package = (
        module_name(path)
        if path.name == "__init__.py"
        else module_name(path).rpartition(".")[0]
    )
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(
                alias.name for alias in node.names if alias.name in modules
            )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    + ([base] if base else [])
                )
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in modules:
                    found.add(candidate)
                elif base in modules:
                    found.add(base)
    return found


def import_graph():
    modules = package_modules()
    return {
        name: imported_modules(path, modules) - {name}
        for name, path in modules.items()
    }


def find_cycle(graph):
    """A list of modules forming a cycle, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return stack[stack.index(child) :] + [child]
            if child not in state:
                cycle = visit(child)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert (
        "keras_sge.applications.resnet"
        in graph["keras_sge.applications.checkpoint_model"]
    )
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_function_local_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_leaf_modules_import_nothing_of_the_package():
    graph = import_graph()
    for leaf in (
        "keras_sge.arguments",
        "keras_sge.applications.architectures",
        "keras_sge.version",
    ):
        assert graph[leaf] == set(), (leaf, graph[leaf])


# Code that comes with a clone but is not installed: the training script's
# TensorFlow-only pieces (examples/training) and the study (examples/study).
NOT_INSTALLED = ("examples", "benchmarks", "tests")


def top_level_imports(source):
    """The top-level package names that `source` imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    return names


def test_top_level_imports_sees_imports_inside_functions():
    source = "import os\ndef f():\n    from examples.training import data\n"
    assert top_level_imports(source) == {"os", "examples"}


def test_the_library_imports_no_training_or_study_code():
    """Changing the layer or the applications never needs training code."""
    offenders = {
        module_name(path): sorted(
            top_level_imports(path.read_text()) & set(NOT_INSTALLED)
        )
        for path in PACKAGE_ROOT.rglob("*.py")
    }
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, offenders
    for moved in ("training", "localisation.py"):
        assert not (PACKAGE_ROOT / moved).exists(), moved


def test_the_package_works_without_importing_its_optional_dependencies(
    tmp_path,
):
    """PyTorch and KerasHub load only for what needs them.

    Importing the package, building a network and loading a Keras weights
    file into it import neither; nor does importing the converter, which
    imports torch only to read a checkpoint.
    """
    weights = str(tmp_path / "m.weights.h5")
    stdout = harness.run_in_fresh_process(
        f"""
        import sys
        import keras_sge, keras_sge.inspect
        from keras_sge import applications
        model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=3)
        model.save_weights({weights!r})
        applications.SGEResNet18(
            input_shape=(32, 32, 3), classes=3, weights={weights!r}
        )
        import keras_sge.convert
        print(sorted(
            name for name in sys.modules
            if name.split(".")[0] in ("torch", "keras_hub")
        ))
        """
    )
    assert stdout.strip().splitlines()[-1] == "[]"


def _no_global_settings(monkeypatch):
    """Makes any change of Keras's image data format or dtype policy fail."""

    def refuse(*args):
        raise AssertionError(f"a builder set a Keras global: {args}")

    monkeypatch.setattr(keras.config, "set_image_data_format", refuse)
    monkeypatch.setattr(keras.config, "set_dtype_policy", refuse)


def test_builders_take_layout_and_policy_as_arguments(monkeypatch):
    """The data format and dtype reach every layer; no global is touched."""
    from keras_sge.applications import SGEResNet18

    _no_global_settings(monkeypatch)
    model = SGEResNet18(
        input_shape=(3, 32, 32),
        classes=10,
        data_format="channels_first",
        dtype="mixed_bfloat16",
    )
    assert keras.config.image_data_format() == "channels_last"
    spatial = [layer for layer in model.layers if hasattr(layer, "data_format")]
    assert spatial and {layer.data_format for layer in spatial} == {
        "channels_first"
    }
    policies = {
        layer.dtype_policy.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }
    # The classifier computes in float32 whatever the policy.
    assert policies == {"mixed_bfloat16", "float32"}, policies
    assert model.get_layer("predictions").dtype_policy.name == "float32"


def test_the_kerashub_backbone_sets_no_keras_global(monkeypatch):
    pytest.importorskip("keras_hub")
    from keras_sge.hub import SGEResNetBackbone

    _no_global_settings(monkeypatch)
    backbone = SGEResNetBackbone(
        depth=18, data_format="channels_first", dtype="bfloat16"
    )
    assert backbone.get_layer("conv1_conv").data_format == "channels_first"
    assert backbone.get_layer("conv2_block1_sge").compute_dtype == "bfloat16"

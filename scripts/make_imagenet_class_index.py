"""Writes keras_sge/data/imagenet_class_index.json, the 1000 ImageNet classes.

Source: KerasHub (https://github.com/keras-team/keras-hub), file
`keras_hub/src/utils/imagenet/imagenet_utils.py`, dict `IMAGENET_NAMES`
(index -> (WordNet id, class name)). KerasHub is licensed under the Apache
License 2.0, Copyright The KerasHub Authors; the names themselves are the
ILSVRC-2012 synsets from WordNet. The committed file was produced from the
keras-hub 0.32.0 wheel from PyPI.

The output has the layout of Keras's own `imagenet_class_index.json`:
`{"0": ["n01440764", "tench"], ..., "999": ["n15075141", "toilet_tissue"]}`.

The source is read as text and parsed with `ast` (nothing from it is
imported or executed), from whichever is given:

    pip download keras-hub --no-deps -d /tmp/kh
    python scripts/make_imagenet_class_index.py --source /tmp/kh/keras_hub-*.whl
    python scripts/make_imagenet_class_index.py --source path/to/imagenet_utils.py
"""

import argparse
import ast
import json
import pathlib
import zipfile

MEMBER = "keras_hub/src/utils/imagenet/imagenet_utils.py"
DEFAULT_OUTPUT = (
    pathlib.Path(__file__).resolve().parents[1]
    / "keras_sge"
    / "data"
    / "imagenet_class_index.json"
)


def read_source(path):
    """The text of imagenet_utils.py, from a wheel or from the file itself."""
    path = pathlib.Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(MEMBER).decode("utf-8")
    return path.read_text(encoding="utf-8")


def parse_class_index(source):
    """Returns {index: (wnid, name)} from the `IMAGENET_NAMES = {...}` literal."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "IMAGENET_NAMES"
            for target in node.targets
        ):
            names = ast.literal_eval(node.value)
            break
    else:
        raise ValueError(
            "No `IMAGENET_NAMES = {...}` assignment found in the source."
        )
    if sorted(names) != list(range(1000)):
        raise ValueError(f"Expected classes 0..999, got {len(names)} entries.")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", required=True, help="keras-hub wheel or imagenet_utils.py"
    )
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)
    names = parse_class_index(read_source(args.source))
    index = {str(i): list(names[i]) for i in range(1000)}
    pathlib.Path(args.output).write_text(
        json.dumps(index) + "\n", encoding="utf-8"
    )
    print(f"Wrote {len(index)} classes to {args.output}")


if __name__ == "__main__":
    main()

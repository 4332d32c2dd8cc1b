"""What a run directory is bound to: `<output-dir>/run.json`.

A run directory holds one run: its backups, `log.csv`, `best.keras` and
`model.keras`. Rerunning a command there resumes it, so a rerun that would
build another model or learn other data must not: restoring a backup of
another architecture fails (or, worse, half succeeds), and the rerun would
start from step 0, rotate the old backups away and overwrite the log, leaving
`best.keras` of one model beside `model.keras` of another.

`record` writes the settings that make the model and its data (chosen by the
caller: architecture, input size, classes, ...) when a run starts; `check`
compares a rerun's settings with them before anything is touched, and
refuses one that differs, naming each difference. Settings that a resumed
run may change (epochs, learning rates, threads, verbosity) are not recorded.
"""

import json
import os
import tempfile

FILENAME = "run.json"


class RunDirectoryError(ValueError):
    """A run directory this command must not use, reported as one line."""


def check(output_dir, settings, respelled=None):
    """Raises `RunDirectoryError` if `output_dir` was recorded with other `settings`.

    A directory without a record (new, or written before records existed)
    passes: its backups then guard themselves (see `backup.Backup.restore`).
    `respelled` maps a setting to `{old value: new value}` for values that
    a record may hold in an older spelling (train.py's `--groups 0`, now
    `--groups none`), so that those runs still resume.
    """
    recorded = read(output_dir)
    if recorded is None:
        return
    for key, spellings in (respelled or {}).items():
        for old, new in spellings.items():
            if key in recorded and recorded[key] == old:
                recorded[key] = new
    changes = [
        _change(key, recorded.get(key), settings.get(key))
        for key in {**recorded, **settings}
        if recorded.get(key) != settings.get(key)
    ]
    if changes:
        raise RunDirectoryError(
            f"{output_dir} holds a run of another model or data: "
            + "; ".join(changes)
            + f" (recorded in {os.path.join(output_dir, FILENAME)}); "
            "rerun with those settings to resume it, or pass --fresh to start "
            "over there (deletes its backups), or use another --output-dir"
        )


def read(output_dir):
    """The recorded settings of `output_dir` (None if it has no record)."""
    path = os.path.join(output_dir, FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RunDirectoryError(
            f"{path} cannot be read ({error}): pass --fresh to start over "
            "there, or use another --output-dir"
        ) from error
    if not isinstance(recorded, dict):
        raise RunDirectoryError(
            f"{path} is not a record of settings (a JSON object): pass "
            "--fresh to start over there, or use another --output-dir"
        )
    return recorded


def record(output_dir, settings):
    """Writes `settings` to `output_dir/run.json`.

    Under a temporary name, then renamed: workers sharing `output_dir`
    write the same record, and a kill leaves the old one or the new one.
    """
    fd, temporary = tempfile.mkstemp(
        dir=output_dir, prefix=".run-", suffix=".json"
    )
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from others.
    os.replace(temporary, os.path.join(output_dir, FILENAME))


def _change(key, old, new):
    """`key was OLD, now NEW`; for lists (classes), what was added and removed."""
    if isinstance(old, list) and isinstance(new, list):
        added = [item for item in new if item not in old]
        removed = [item for item in old if item not in new]
        parts = [f"{len(old)} then, {len(new)} now"]
        parts += [f"new: {_few(added)}"] if added else []
        parts += [f"gone: {_few(removed)}"] if removed else []
        return f"{key} differ ({', '.join(parts)})"
    return f"{key} was {_show(old)}, now {_show(new)}"


def _few(items, limit=3):
    shown = ", ".join(repr(item) for item in items[:limit])
    return shown + (
        f" and {len(items) - limit} more" if len(items) > limit else ""
    )


def _show(value):
    return "not recorded" if value is None else str(value)

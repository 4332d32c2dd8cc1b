"""Benchmark: the start-up check of an image folder, per file.

Run from the repository root:

    python -m benchmarks.bench_scan                  # 3000 JPEGs of ~100 KB
    python -m benchmarks.bench_scan --files 500 --rounds 2   # quick

Writes `--files` JPEGs of about `--kb` KB (ImageNet's mean is ~110 KB; one
in ten carries a 30 KB EXIF block, which pushes the frame header past the
first read) into a temporary folder, then times, interleaved over rounds:

- `list` (id `list`): listing the class folders, as
  `data.scan_image_folder` does;
- `head 8 B` (id `head8`): the check before this one: 8 bytes and the size of each file;
- `check`: `image_files.check_files`, the structural check of head and
  tail that the training script runs now.

It also times the conversion of one file to PNG: what each of the rare files
that fail the check costs.

Each is timed with the files in the page cache (`warm`) and after asking the
kernel to drop them (`posix_fadvise(DONTNEED)` per file, `cold`): on a
virtual disk the host may still cache them, so `cold` is a lower bound for a
real cold read. The per-file cost times 1.28 million files is printed as
the extrapolation to ImageNet's training set. Results: results/scan.json,
one row per `<id>_<warm|cold>` (e.g. `check_cold`) with its display label
(files written before ids existed are keyed by label, e.g. `check cold`).
"""

import argparse
import concurrent.futures
import io
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from benchmarks import common  # noqa: E402

IMAGENET_TRAIN_FILES = 1_281_167
CLASSES = 10
# Variant id -> display label; a result's id is `<variant>_<warm|cold>`.
LABELS = {"list": "list", "head8": "head 8 B", "check": "check"}


def make_jpegs(count, kb, distinct=24):
    """`distinct` different JPEGs of about `kb` KB, every tenth with EXIF."""
    from PIL import Image

    rng = np.random.RandomState(0)
    blobs = []
    for i in range(distinct):
        # Noise on a gradient: about 0.45 bytes per pixel at quality 85.
        side = int((kb * 1024 / 0.45 / (4 / 3)) ** 0.5)
        gradient = np.linspace(0, 200, side * 4 // 3)[None, :, None]
        pixels = np.clip(
            gradient + rng.normal(0, 24, (side, side * 4 // 3, 3)), 0, 255
        ).astype("uint8")
        buffer = io.BytesIO()
        exif = {"exif": b"Exif\0\0" + bytes(30_000)} if i % 10 == 0 else {}
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85, **exif)
        blobs.append(buffer.getvalue())
    return [blobs[i % distinct] for i in range(count)]


def write_folder(root, blobs):
    for c in range(CLASSES):
        os.makedirs(os.path.join(root, f"class{c}"))
    for i, blob in enumerate(blobs):
        with open(
            os.path.join(root, f"class{i % CLASSES}", f"{i:07d}.JPEG"), "wb"
        ) as f:
            f.write(blob)


def list_files(root):
    from examples.training import data

    _, splits, _ = data.list_image_folder(root)
    return sorted(path for paths, _ in splits.values() for path in paths)


def head_8_bytes(paths):
    """The previous check: the signature and the size of every file."""

    def sniff(path):
        with open(path, "rb") as f:
            head = f.read(8)
            return head, os.fstat(f.fileno()).st_size

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return list(pool.map(sniff, paths))


def structural_check(paths, root, scratch):
    from examples.training import image_files

    check = image_files.check_files(paths, root, scratch)
    assert check.keep.all(), check.bad
    return check


def conversion_seconds(paths, root, scratch):
    """Median seconds to convert one file to PNG (what a file failing the check costs)."""
    from examples.training import image_files

    seconds = []
    for i, path in enumerate(paths):
        start = time.perf_counter()
        image_files.convert_to_png(path, os.path.join(scratch, f"{i}.png"))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def drop_from_cache(paths):
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--kb", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--dir", help="where to write the files (default: a temporary folder)"
    )
    parser.add_argument(
        "--out", help="results folder (default benchmarks/results)"
    )
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="bench_scan-", dir=args.dir)
    try:
        blobs = make_jpegs(args.files, args.kb)
        write_folder(os.path.join(root, "images"), blobs)
        images = os.path.join(root, "images")
        paths = list_files(images)
        mean_kb = sum(map(len, blobs)) / len(blobs) / 1024
        common.log(f"{len(paths)} JPEGs, mean {mean_kb:.0f} KB, in {images}")
        variants = {
            "list": lambda: list_files(images),
            "head8": lambda: head_8_bytes(paths),
            "check": lambda: structural_check(
                paths, images, os.path.join(root, "converted")
            ),
        }
        times = {
            f"{vid}_{cache}": []
            for cache in ("warm", "cold")
            for vid in variants
        }
        for _ in range(args.rounds):
            for cache in ("warm", "cold"):
                for vid, run in variants.items():
                    if cache == "cold":
                        drop_from_cache(paths)
                    start = time.perf_counter()
                    run()
                    times[f"{vid}_{cache}"].append(time.perf_counter() - start)
        conversion = conversion_seconds(
            paths[:24], images, os.path.join(root, "converted")
        )
        report(times, len(paths), mean_kb, conversion, args)
    finally:
        shutil.rmtree(root)


def report(times, count, mean_kb, conversion, args):
    rows = {}
    common.log(
        f"\n{'variant':16s} {'median s':>9s} {'range s':>15s} {'us/file':>8s} {'1.28M files':>12s}"
    )
    for rid, values in times.items():
        vid, cache = rid.rsplit("_", 1)
        label = f"{LABELS[vid]} {cache}"
        median = statistics.median(values)
        per_file = median / count
        rows[rid] = {
            "id": rid,
            "label": label,
            "median_s": median,
            "min_s": min(values),
            "max_s": max(values),
            "us_per_file": per_file * 1e6,
        }
        common.log(
            f"{label:16s} {median:9.3f} {min(values):7.3f}-{max(values):<7.3f} "
            f"{per_file * 1e6:8.1f} "
            f"{per_file * IMAGENET_TRAIN_FILES:10.0f} s"
        )
    common.log(
        f"converting one file to PNG (Pillow): {conversion * 1e3:.1f} ms"
    )
    payload = {
        "benchmark": "scan",
        "files": count,
        "mean_kb": mean_kb,
        "rounds": args.rounds,
        "results": rows,
        "conversion_s": conversion,
        "machine": common.machine(),
    }
    common.log(f"\nwrote {common.save_result('scan', payload, args.out)}")


if __name__ == "__main__":
    main()

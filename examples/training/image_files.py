"""Checking the files of an image folder before training, cheaply.

A file that TensorFlow cannot decode would stop a run with a traceback when
the input pipeline first reaches it, possibly hours in. `check_files` finds
such files at start, for little more than the cost of listing the folder:

1. **Structural check, every file** (`inspect_file`): the first few KB and
   the last KB of the file, in a thread pool. Read-ahead makes the head as
   cheap as its first bytes; the tail is one more small read. Per format:

   - JPEG: the markers are walked up to the start of the image data (frame
     header: 8-bit samples, 1, 3 or 4 components, a coding TensorFlow
     decodes), then the end-of-image marker must follow the image data.
     Data after the marker (zero padding, a phone's embedded video) is
     allowed: TensorFlow ignores it. No end marker means a truncated file,
     or one whose end is zeros (a half-finished copy): unreadable.
   - PNG: an IHDR header first, the IEND chunk last.
   - GIF: the trailer byte last.
   - BMP: what TensorFlow's own decoder accepts: 24- or 32-bit uncompressed
     pixels and a file exactly as long as the header says. It also decodes
     8-bit BMPs, but as grey levels, ignoring the palette: those are
     converted rather than trained on in wrong colours.
   - WebP: read by `tf.io.decode_image` only in recent TensorFlow versions,
     so always converted.
   - Anything else (a `.txt`, `Thumbs.db`, an empty file): unreadable.

2. **Conversion, the rare files that fail a check** (`convert_to_png`): they
   are decoded in full with Pillow. If that works, the image is written once
   as an RGB PNG under the run's output directory (atomically, as several
   workers may share it) and trained on from there; otherwise the file is
   unreadable, with both reasons.

Pillow, not TensorFlow, makes that decision: at start TensorFlow must not
run any op before the distribution strategy configures it. The structural
rules above follow what TensorFlow's decoders accept (`decode_image` and
`decode_and_crop_jpeg` with `channels=3`): they read grey, CMYK and
progressive JPEGs, arithmetic-coded JPEGs, every PNG colour type and bit
depth, and animated GIFs (the first frame), so those are used as they are.
"""

import concurrent.futures
import dataclasses
import os
import stat
import tempfile

import numpy as np

OK = "ok"
CONVERT = "convert"
BAD = "bad"

NOT_AN_IMAGE = "not a JPEG/PNG/GIF/BMP image"

# The head holds the JPEG frame header of almost every file (EXIF and ICC
# segments that push it further are read on demand); the tail holds the end
# marker even after a little padding.
HEAD_BYTES = 8192
TAIL_BYTES = 1024
# Many small reads: threads hide the file system's latency.
THREADS = 32

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"
# Frame headers (SOFn) whose coding TensorFlow's libjpeg decodes: baseline,
# extended and progressive, Huffman or arithmetic. The others (lossless,
# hierarchical) are left to Pillow.
_JPEG_DECODABLE_FRAMES = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
_JPEG_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = {0x01} | set(range(0xD0, 0xD8))
# Pillow may try only the formats this module knows: never, say, EPS (which
# would run Ghostscript on a stray file).
_PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the structural check says about one file.

    `status` is OK (TensorFlow decodes it as it is), CONVERT (decode it with
    Pillow and train on a PNG copy, if that works) or BAD (unreadable);
    `reason` says why for the last two.
    """

    status: str
    reason: str = ""
    size: int = 0


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """The outcome of `check_files` over a list of paths.

    `paths` are what to read for each input path (a converted PNG where one
    was made); `keep` marks the readable ones; `sizes` are the sizes of what
    will be read. `bad` lists `(path, reason)` of the unreadable files and
    `converted` `(path, png_path, reason)` of the converted ones.
    """

    paths: np.ndarray
    keep: np.ndarray
    sizes: np.ndarray
    bad: tuple
    converted: tuple


def check_files(paths, root, converted_dir):
    """Checks `paths` (files under `root`); converts what needs it.

    Converted images are written to `converted_dir`, at their path relative
    to `root` plus `.png`.
    """
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        verdicts = _inspect_all(pool, paths)
        to_convert = [i for i, v in enumerate(verdicts) if v.status == CONVERT]
        targets = [
            _converted_path(paths[i], root, converted_dir) for i in to_convert
        ]
        errors = list(
            pool.map(_try_convert, [paths[i] for i in to_convert], targets)
        )
    read_paths = np.array(paths, dtype=object)
    sizes = np.array([v.size for v in verdicts], dtype=np.int64)
    keep = np.array([v.status == OK for v in verdicts], dtype=bool)
    converted = []
    for i, target, error in zip(to_convert, targets, errors):
        if error is None:
            read_paths[i], sizes[i], keep[i] = (
                target,
                os.path.getsize(target),
                True,
            )
            converted.append((paths[i], target, verdicts[i].reason))
        else:
            verdicts[i] = Verdict(
                BAD,
                f"{verdicts[i].reason}; Pillow cannot read it either: {error}",
            )
    bad = tuple(
        (path, v.reason) for path, v in zip(paths, verdicts) if v.status == BAD
    )
    return FileCheck(read_paths.astype(str), keep, sizes, bad, tuple(converted))


def _inspect_all(pool, paths):
    """`inspect_file` over `paths`, in chunks of files per task.

    One task per file would cost more in the pool's bookkeeping than the
    check itself when the files are in the page cache.
    """
    chunk = max(1, min(256, len(paths) // (4 * THREADS)))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    return [
        verdict for part in pool.map(_inspect_files, chunks) for verdict in part
    ]


def _inspect_files(paths):
    return [inspect_file(path) for path in paths]


def inspect_file(path):
    """The structural check of one file (see the module docstring)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        return Verdict(BAD, f"cannot open: {error.strerror}")
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return Verdict(
                BAD, "not a file (class folders are read one level deep)"
            )
        head = os.pread(fd, HEAD_BYTES, 0)

        def read(offset, count):
            if offset + count <= len(head):
                return head[offset : offset + count]
            return os.pread(fd, count, offset)

        verdict = _inspect(head, status.st_size, read)
    except OSError as error:
        return Verdict(BAD, f"cannot read: {error.strerror}")
    finally:
        os.close(fd)
    return Verdict(verdict.status, verdict.reason, status.st_size)


def _inspect(head, size, read):
    if size == 0:
        return Verdict(BAD, "empty file")
    if head.startswith(b"\xff\xd8\xff"):
        return _inspect_jpeg(size, read)
    if head.startswith(_PNG_SIGNATURE):
        return _inspect_png(head, size, read)
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _inspect_gif(size, read)
    if head.startswith(b"BM"):
        return _inspect_bmp(head, size)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Verdict(
            CONVERT, "WebP, which only recent TensorFlow versions decode"
        )
    return Verdict(BAD, NOT_AN_IMAGE)


def _tail(size, read, start=0):
    """The last TAIL_BYTES of the file, or fewer: none before `start`."""
    begin = max(start, size - TAIL_BYTES)
    return read(begin, size - begin)


def _inspect_jpeg(size, read):
    frame, data_start = _walk_jpeg_header(read)
    if isinstance(frame, Verdict):
        return frame
    if data_start >= size:
        return Verdict(BAD, "truncated JPEG: it ends before its image data")
    marker, precision, components = frame
    if marker not in _JPEG_DECODABLE_FRAMES:
        return Verdict(
            CONVERT,
            f"JPEG coding TensorFlow does not decode (SOF{marker - 0xC0})",
        )
    if precision != 8:
        return Verdict(
            CONVERT, f"{precision}-bit JPEG, which TensorFlow does not decode"
        )
    if components not in (1, 3, 4):
        return Verdict(CONVERT, f"JPEG with {components} colour components")
    if _JPEG_EOI in _tail(size, read, data_start) or _find_after(
        read, size, data_start, _JPEG_EOI
    ):
        return Verdict(OK)
    return Verdict(
        BAD, "truncated JPEG: no end-of-image marker after the image data"
    )


def _walk_jpeg_header(read):
    """Walks the markers up to the image data.

    Returns `((SOF marker, precision, components), image data offset)`, or
    `(Verdict, None)` when the header is cut short or malformed.
    """
    offset, frame = 2, None
    while True:
        segment = read(offset, 4)
        if len(segment) < 2:
            return Verdict(
                BAD, "truncated JPEG: it ends inside its header"
            ), None
        if segment[0] != 0xFF:
            return Verdict(CONVERT, "malformed JPEG header"), None
        marker = segment[1]
        if marker == 0xFF:  # Fill byte before a marker.
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker == 0xD9:
            return Verdict(BAD, "JPEG without image data"), None
        if len(segment) < 4:
            return Verdict(
                BAD, "truncated JPEG: it ends inside its header"
            ), None
        length = int.from_bytes(segment[2:4], "big")
        if length < 2:
            return Verdict(CONVERT, "malformed JPEG header"), None
        if marker in _JPEG_FRAMES:
            body = read(offset + 4, 6)
            if len(body) < 6:
                return Verdict(
                    BAD, "truncated JPEG: it ends inside its header"
                ), None
            frame = (marker, body[0], body[5])
        if marker == 0xDA:  # Start of scan: the image data follows.
            if frame is None:
                return Verdict(CONVERT, "JPEG without a frame header"), None
            return frame, offset + 2 + length
        offset += 2 + length


def _find_after(read, size, start, pattern, chunk=1 << 20):
    """Whether `pattern` occurs in the file after `start` (reads it all)."""
    carry = b""
    for offset in range(start, size, chunk):
        block = carry + read(offset, chunk)
        if pattern in block:
            return True
        carry = block[-(len(pattern) - 1) :]
    return False


def _inspect_png(head, size, read):
    if head[12:16] != b"IHDR":
        return Verdict(CONVERT, "PNG without an IHDR header")
    if not _tail(size, read).endswith(_PNG_IEND):
        return Verdict(
            CONVERT,
            "PNG not ending with its IEND chunk (truncated, or data after it)",
        )
    return Verdict(OK)


def _inspect_gif(size, read):
    if not _tail(size, read).endswith(b"\x3b"):
        return Verdict(
            CONVERT,
            "GIF not ending with its trailer byte (truncated, or data after it)",
        )
    return Verdict(OK)


def _inspect_bmp(head, size):
    """What TensorFlow's BMP decoder accepts, which is little."""
    if len(head) < 54:
        return Verdict(BAD, "truncated BMP: it ends inside its header")
    pixels_at, header_size, compression = (
        _int(head, 10, 4),
        _int(head, 14, 4),
        _int(head, 30, 4),
    )
    width, height = (
        _int(head, 18, 4, signed=True),
        _int(head, 22, 4, signed=True),
    )
    bits = _int(head, 28, 2)
    if header_size < 40:
        return Verdict(CONVERT, "BMP with an OS/2 header")
    if bits not in (24, 32):
        return Verdict(
            CONVERT,
            f"{bits}-bit BMP: TensorFlow reads 24- and 32-bit BMPs only (8-bit ones as grey)",
        )
    if not (
        compression == 0
        or (compression == 3 and bits == 32 and _bgra_masks(head))
    ):
        return Verdict(
            CONVERT,
            f"BMP with compression {compression}, which TensorFlow does not decode correctly",
        )
    if width <= 0 or height == 0:
        return Verdict(CONVERT, "BMP with an empty size")
    expected = pixels_at + (bits // 8 * width + 3) // 4 * 4 * abs(height)
    if size != expected:
        return Verdict(
            CONVERT,
            f"BMP of {size} bytes, its header says {expected} (truncated, or data after it)",
        )
    return Verdict(OK)


def _int(head, at, size, signed=False):
    """A little-endian integer of the BMP header."""
    return int.from_bytes(head[at : at + size], "little", signed=signed)


def _bgra_masks(head):
    """Whether a BI_BITFIELDS BMP's channel masks are the BGRA layout TensorFlow assumes."""
    red, green, blue = (
        bytes.fromhex("0000ff00"),
        bytes.fromhex("00ff0000"),
        bytes.fromhex("ff000000"),
    )
    return head[54:66] == red + green + blue


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def _converted_path(path, root, converted_dir):
    return os.path.join(converted_dir, os.path.relpath(path, root) + ".png")


def _try_convert(source, target):
    """Converts; returns None, or why it failed (one line)."""
    try:
        convert_to_png(source, target)
        return None
    except ImportError:
        return "Pillow is not installed"
    except Exception as error:  # Pillow raises many types on broken files.
        return (str(error).splitlines() or [type(error).__name__])[0]


def convert_to_png(source, target):
    """Decodes `source` with Pillow, writes it to `target` as an RGB PNG.

    The first frame of an animation, alpha dropped: what TensorFlow gives
    for the files it decodes itself. Written under a temporary name and
    renamed, so a reader (or another worker converting the same file) never
    sees a partial PNG.
    """
    from PIL import Image

    with Image.open(source, formats=_PILLOW_FORMATS) as image:
        image.load()
        rgb = _as_rgb(image)
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(
        dir=folder, prefix=".converting-", suffix=".png"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            rgb.save(f, "PNG", compress_level=1)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _as_rgb(image):
    """An 8-bit RGB copy of a Pillow image."""
    from PIL import Image

    if image.mode.startswith("I"):
        # 16- or 32-bit grey: Pillow's own conversion clips at 255 instead
        # of scaling; keep the top 8 of 16 bits as TensorFlow does.
        values = np.asarray(image).astype(np.int64)
        image = Image.fromarray(
            (np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L"
        )
    return image.convert("RGB")

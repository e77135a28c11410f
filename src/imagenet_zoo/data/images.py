"""Decoding whatever a real folder holds into one RGB image, or one typed error.

Handles EXIF orientation (applied once), grayscale, palette, alpha (composited on a fixed white
background), CMYK, 16-bit and float images, and animated files (first frame). Refuses decompression
bombs from the header, before any pixel is allocated.

Decoding does only the work the model needs: given `min_short_side` (the shorter side the model's
preprocessing resizes to, times a margin), a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale in the
DCT domain (Pillow's `draft`), the smallest scale whose shorter side is still at least that long. A
12-megapixel phone photo then costs a fraction of a full decode. Without it (`decode="full"`), every
photo is decoded at full resolution, the exact ImageNet evaluation protocol.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import io
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imagenet_zoo.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    UnsupportedImageError,
)

ImageSource = Union[str, os.PathLike[str], bytes, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)
DecodeMode = Literal["fast", "full"]
DECODE_MODES: tuple[DecodeMode, ...] = ("fast", "full")

# 64 megapixels: above any camera photo a classifier needs (it downsizes to 224-299 px anyway), far
# below the ~1 GB of RGB pixels a hostile 50,000 x 50,000 header would ask for.
DEFAULT_MAX_PIXELS = 64_000_000
ALPHA_BACKGROUND = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112
_ROTATED_QUARTER = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class InputInfo:
    """What the input was, and what decoding did to it (reported with every classification)."""

    format: str | None
    width: int
    height: int
    mode: str
    exif_transposed: bool
    warnings: tuple[str, ...] = ()  # what the decoder warned about this photo (Pillow's own words)

    def to_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "exif_transposed": self.exif_transposed,
        }
        if self.warnings:  # the common case has none, and no field for them
            info["warnings"] = list(self.warnings)
        return info


class _DecoderWarnings(threading.local):
    """Warnings raised while this thread decodes a photo, kept for that photo's result instead of being
    printed between the results. Decoding runs in worker threads, where `warnings.catch_warnings` (which
    swaps process-wide state) cannot be used: one process-wide hook routes each warning to the thread
    that raised it, and passes any other warning on unchanged. A `catch_warnings` block elsewhere puts the
    previous hook back when it ends, so the hook is checked, and put back, before every decode."""

    messages: list[str] | None = None
    _lock = threading.Lock()

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[str]]:
        self._install()
        collected: list[str] = []
        self.messages = collected
        try:
            yield collected
        finally:
            self.messages = None

    def _install(self) -> None:
        if getattr(warnings.showwarning, "_imagenet_zoo", False):
            return
        with _DecoderWarnings._lock:
            original = warnings.showwarning
            if getattr(original, "_imagenet_zoo", False):
                return

            def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
                if self.messages is None:
                    original(message, category, *args, **kwargs)
                elif not issubclass(category, Image.DecompressionBombWarning):  # refused by size instead
                    self.messages.append(str(message))

            show._imagenet_zoo = True  # type: ignore[attr-defined]
            warnings.showwarning = show
            # Every photo's warnings, not only the first of each kind in the process.
            warnings.filterwarnings("always", module=r"PIL\.")


_decoder_warnings = _DecoderWarnings()


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied
    info: InputInfo


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
)


def find_images(paths: list[str], *, recursive: bool = False) -> list[str]:
    """Expand what a user typed into image files, in a stable order.

    Files are kept as given (a broken one is reported later, not dropped); folders yield their image files
    (by suffix), descending into sub-folders only with `recursive` and never through a symlinked folder, so
    a symlink loop cannot trap the walk; a pattern such as `photos/*.jpg` or `**/*.png` that names no
    existing path is expanded as a glob.
    """
    found: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(_images_in(path, recursive))
        elif not path.exists() and any(c in given for c in "*?["):
            found.extend(sorted(p for p in glob.glob(given, recursive=True) if Path(p).is_file()))
        else:
            found.append(given)
    return found


def _images_in(folder: Path, recursive: bool) -> list[str]:
    images: list[str] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        images.extend(
            os.path.join(root, n) for n in sorted(names) if Path(n).suffix.lower() in IMAGE_SUFFIXES
        )
        if not recursive:
            break
    return images


def describe_source(source: ImageSource) -> str:
    """A short name for an input, used in results and error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<{type(source).__name__}>"


Admit = Callable[[int], None]  # told how many bytes a decode is about to allocate; may wait for room
# What a job's decoding threads may hold at once (`DecodeBudget`): a 64-MP photo with alpha fits alone.
DEFAULT_DECODE_BUDGET = 512 * 2**20


class DecodeBudget:
    """The bytes photos being decoded may hold at once, shared by a job's decoding threads: each photo
    takes what its decode will allocate (known from its header, before any pixel is) and gives it back
    when its preprocessing is done, so a folder of any length, decoded by any number of threads, stays
    within one bound. A photo larger than the whole budget is decoded alone."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self._room = threading.Condition()

    @contextlib.contextmanager
    def admission(self) -> Iterator[Admit]:
        """An `Admit` for one photo: what it takes is given back when the block ends."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            with self._room:
                self._room.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
                self.held += size
                taken += size

        try:
            yield take
        finally:
            with self._room:
                self.held -= taken
                self._room.notify_all()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_MMAPPED_FROM = 1 << 20


@functools.cache
def give_back_large_buffers() -> None:
    """Serve allocations of 1 MiB and more from their own mappings, returned to the system when freed.

    glibc otherwise raises its mmap threshold after the first large free (up to 32 MiB), so a decoder's
    later buffers come from per-thread heaps that keep their pages: a folder of hostile photos decoded by
    16 threads grew to 1.7 GB where one photo needs 0.5 GB. Process-wide, once; elsewhere than glibc it
    does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAPPED_FROM)
    except (OSError, AttributeError):
        pass


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def decoded_bytes(image: Image.Image) -> int:
    """What decoding and converting `image` (at its size after `draft`) allocates at most: its pixels as
    Pillow stores them (4 bytes a pixel for most modes) and an RGB copy of them."""
    return image.width * image.height * (_BYTES_PER_PIXEL.get(image.mode, 4) + 4)


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_short_side: int | None = None,
    admit: Admit | None = None,
) -> DecodedImage:
    """Decode `source` (path, bytes, PIL image or uint8 array) to RGB, or raise an `ImageError`.

    With `min_short_side`, a JPEG may be decoded at a reduced scale whose shorter side is at least that
    many pixels; `info` still reports the photo's own size. `admit` is told the bytes the decode will
    allocate once the header is read, before any pixel is (see `DecodeBudget`).
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        return _normalize(source, max_pixels, None, None)
    if isinstance(source, bytes):
        if not source:
            raise EmptyImageError("the image data is empty (0 bytes)")
        return _open_and_normalize(lambda: Image.open(io.BytesIO(source)), max_pixels, min_short_side, admit)
    path = Path(os.fspath(source))
    if not path.is_file():
        raise ImageNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EmptyImageError(f"{path}: the file is empty (0 bytes)")
    try:
        file = path.open("rb")
    except OSError as exc:
        raise ImageNotFoundError(f"{path}: cannot read: {exc.strerror}") from exc
    with file:
        return _open_and_normalize(lambda: Image.open(file), max_pixels, min_short_side, admit)


MAX_FILE_BYTES = 256 * 2**20  # a photo read into memory whole (the GPU path, object storage): a bound


def read_source(source: ImageSource) -> bytes:
    """The encoded bytes of a path or a bytes source, with `decode_image`'s errors (raises
    `UnsupportedImageError` for a decoded image or array: there are no bytes to read)."""
    if isinstance(source, bytes):
        if not source:
            raise EmptyImageError("the image data is empty (0 bytes)")
        return source
    if isinstance(source, (Image.Image, np.ndarray)):
        raise UnsupportedImageError("already decoded: there is nothing to read")
    path = Path(os.fspath(source))
    if not path.is_file():  # before opening: a FIFO would block the open
        raise ImageNotFoundError(f"{path}: no such file")
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                raise EmptyImageError(f"{path}: the file is empty (0 bytes)")
            if size > MAX_FILE_BYTES:
                raise ImageTooLargeError(f"{path}: {size:,} bytes, more than {MAX_FILE_BYTES:,}")
            return file.read()
    except OSError as exc:
        raise ImageNotFoundError(f"{path}: cannot read: {exc.strerror}") from exc


def _open_and_normalize(
    opener: Callable[[], Image.Image], max_pixels: int, min_short_side: int | None, admit: Admit | None
) -> DecodedImage:
    with pillow_errors(), _decoder_warnings.collecting() as collected:
        # Not closed here: the caller owns the file, and closing an image frees its pixels, which would
        # cost a copy of every decoded photo.
        decoded = _normalize(opener(), max_pixels, min_short_side, admit)
    if collected:
        decoded = DecodedImage(decoded.image, replace(decoded.info, warnings=tuple(dict.fromkeys(collected))))
    return decoded


@contextlib.contextmanager
def pillow_errors() -> Iterator[None]:
    """What Pillow raises while it opens or decodes an image, as this package's `ImageError`s."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError("not an image, or an image format Pillow cannot read") from exc
    except OSError as exc:
        raise CorruptImageError(f"broken or truncated image data: {exc}") from exc
    except Exception as exc:  # Pillow's decoders raise assorted types on hostile data; all mean corrupt
        raise CorruptImageError(f"broken image data: {type(exc).__name__}: {exc}") from exc


def check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} is {width * height:,} pixels, above the limit of {max_pixels:,}"
        )


def _normalize(
    image: Image.Image, max_pixels: int, min_short_side: int | None, admit: Admit | None
) -> DecodedImage:
    check_size(image.width, image.height, max_pixels)
    fmt, mode, (width, height) = image.format, image.mode, image.size
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if min_short_side is not None:
        _draft(image, min_short_side)
    if admit is not None:
        admit(decoded_bytes(image))
    image.load()
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    transposed = ImageOps.exif_transpose(image) if orientation not in (None, 1) else image
    if orientation in _ROTATED_QUARTER:
        width, height = height, width
    info = InputInfo(fmt, width, height, mode, exif_transposed=orientation not in (None, 1))
    return DecodedImage(_to_rgb(transposed), info)


def _draft(image: Image.Image, min_short_side: int) -> None:
    """Ask the decoder for the smallest scale whose shorter side is at least `min_short_side` (JPEG:
    1/2, 1/4 or 1/8 in the DCT domain; other formats ignore the request and decode in full)."""
    scale = min_short_side / min(image.size)
    if scale < 0.5:  # libjpeg's largest reduction that can apply is 1/2
        image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise UnsupportedImageError(f"cannot convert image mode {mode} to RGB") from exc


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit integer (modes I;16*, I) and float (F) images to 8-bit, by their nominal range."""
    pixels = np.asarray(image)
    if image.mode == "F":
        eight_bit = np.clip(pixels, 0.0, 255.0)
    else:
        # 16-bit samples (Pillow stores 16-bit PNG/TIFF as I;16 or I) span 0..65535.
        eight_bit = np.clip(pixels.astype(np.float64) / 257.0, 0, 255)
    return Image.fromarray(np.round(eight_bit).astype(np.uint8), "L").convert("RGB")


def _from_array(array: np.ndarray, max_pixels: int) -> DecodedImage:
    if array.dtype != np.uint8:
        raise UnsupportedImageError(f"arrays must be uint8 RGB pixels, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise UnsupportedImageError(f"arrays must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    check_size(array.shape[1], array.shape[0], max_pixels)
    image = Image.fromarray(np.ascontiguousarray(array))  # uint8 HxW / HxWx3 / HxWx4 -> L / RGB / RGBA
    info = InputInfo(None, image.width, image.height, image.mode, exif_transposed=False)
    return DecodedImage(_to_rgb(image), info)

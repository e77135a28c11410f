"""Photos to model inputs on a torch device (the GPU): JPEGs decoded in one batch by nvJPEG, EXIF
orientation applied, then resized and cropped for the whole batch at once: uint8 pixels, which the
engine scales as the weights expect, as it does the Pillow path's.

Each photo's header is read first, on the CPU, by Pillow (nothing is decoded): its size is checked
against the pixel cap before any decoder sees it, and it is routed. Baseline and progressive JPEGs in
RGB or grayscale go to the device decoder; CMYK JPEGs, 16-bit, PNG, WebP, TIFF, GIF, what the decoder
rejects, and every photo when the model resizes with "nearest", take today's Pillow path
(`preprocess.model_input`) and join the batch as pixels. One broken file is that file's error, never
its batch's. The device decoder needs each file whole in memory: a batch holds its files up to
`HELD_BYTES`, and a larger file is read when its decode group comes, within the decode budget.

The resize is Pillow's: the same antialiasing filter weights, as two small matrices per photo (rows and
columns, the crop included), made on the device for the whole batch at once and applied to the padded
batch as two batched matrix products there, rounded to 8 bits after each pass as Pillow's 8-bit
resampling does. A "fast" decode first averages blocks of 2, 4 or 8 pixels where libjpeg would have
decoded at that scale (`images._draft`), folded into the same matrices.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from imagenet_zoo.data.images import (
    DEFAULT_DECODE_BUDGET,
    MAX_FILE_BYTES,
    DecodeBudget,
    DecodeMode,
    ImageSource,
    InputInfo,
    check_size,
    pillow_errors,
    read_source,
)
from imagenet_zoo.data.preprocess import CpuPath, Prepared, draft_short_side
from imagenet_zoo.errors import CorruptImageError, ImageError, ImageTooLargeError
from imagenet_zoo.records import ErrorInfo
from imagenet_zoo.specs import DataConfig

T = TypeVar("T")
_EXIF_ORIENTATION = 0x0112
_DEVICE_MODES = ("RGB", "L")  # what nvJPEG decodes to RGB as libjpeg does (CMYK, YCCK: Pillow)


@dataclass(frozen=True)
class Header:
    """What a photo's header says, read without decoding it."""

    format: str | None
    mode: str
    width: int  # as stored, before orientation
    height: int
    orientation: int  # EXIF 1-8

    @property
    def info(self) -> InputInfo:
        turned = self.orientation in (5, 6, 7, 8)
        width, height = (self.height, self.width) if turned else (self.width, self.height)
        return InputInfo(self.format, width, height, self.mode, exif_transposed=self.orientation != 1)

    @property
    def on_device(self) -> bool:
        return self.format == "JPEG" and self.mode in _DEVICE_MODES


def read_header(data: bytes | Path, max_pixels: int) -> Header:
    """The header of an encoded photo (its bytes, or its file: only the header is read), its size checked
    against `max_pixels` (raises its `ImageError`)."""
    with pillow_errors(), Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as image:
        check_size(image.width, image.height, max_pixels)
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        return Header(
            image.format,
            image.mode,
            image.width,
            image.height,
            orientation if orientation in range(1, 9) else 1,
        )


class JpegDecoder(Protocol):
    """Encoded JPEGs to (3, rows, columns) uint8 tensors on the device, as stored (no orientation); an
    exception in place of each one it cannot decode."""

    def __call__(self, data: Sequence[bytes]) -> list[Any]: ...


def nvjpeg_decoder(device: Any) -> JpegDecoder:
    """torchvision's batched nvJPEG decode on a CUDA device; a batch it refuses is decoded one by one, so
    only the broken photos fail."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: Sequence[bytes]) -> list[Any]:
        with warnings.catch_warnings():  # the decoder only reads the bytes it is lent: no copy for it
            warnings.filterwarnings("ignore", "The given buffer is not writable")
            encoded = [torch.frombuffer(d, dtype=torch.uint8) for d in data]
        try:
            return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            return [_decoded_alone(decode_jpeg, e, ImageReadMode.RGB, device) for e in encoded]

    return decode


def _decoded_alone(decode_jpeg: Callable[..., Any], encoded: Any, mode: Any, device: Any) -> Any:
    try:
        return decode_jpeg(encoded, mode=mode, device=device)
    except RuntimeError as exc:
        return CorruptImageError(f"the GPU's JPEG decoder refused it: {exc}")


def pillow_decoder(device: Any) -> JpegDecoder:
    """A stand-in for nvJPEG where there is none (tests on a CPU): libjpeg through Pillow, every pixel,
    to the same tensors, so everything around the decoder runs as it does on a GPU."""
    import torch

    def decode_one(data: bytes) -> Any:
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("RGB"))
        except Exception as exc:  # what nvJPEG would refuse: broken data
            return CorruptImageError(f"broken JPEG data: {type(exc).__name__}: {exc}")
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device)

    return lambda data: [decode_one(d) for d in data]


def oriented(image: Any, orientation: int) -> Any:
    """A (3, rows, columns) tensor turned as its EXIF orientation says (a view: no copy)."""
    if orientation in (5, 6, 7, 8):
        image = image.transpose(1, 2)  # 5: transpose; 6, 7, 8 add a flip
    flips = {2: [2], 3: [1, 2], 4: [1], 6: [2], 7: [1, 2], 8: [1]}.get(orientation)
    return image.flip(flips) if flips else image


@dataclass(frozen=True)
class LaterFile:
    """A photo file read when its decode group comes, not with its batch: a large one, or one past what a
    batch holds (`HELD_BYTES`)."""

    path: Path
    size: int


Jpeg = tuple[int, bytes | LaterFile, Header]  # a photo's place in its batch, its bytes and its header
Found = tuple[bytes | LaterFile, Header] | ErrorInfo  # a photo's bytes (or file) and header, or its error


class DevicePreprocessor:
    """A batch of photos to model inputs on `device`: (photos, 3, size, size) uint8 pixels, channels-last."""

    def __init__(
        self,
        config: DataConfig,
        device: Any,
        *,
        decode: DecodeMode,
        max_pixels: int,
        cpu_path: CpuPath,
        decoder: JpegDecoder | None = None,
    ) -> None:
        import torch

        self.torch = torch
        self.config, self.device, self.decode, self.max_pixels = (
            config,
            torch.device(device),
            decode,
            max_pixels,
        )
        self.cpu_path = cpu_path
        self.decoder = decoder or (
            nvjpeg_decoder(self.device) if self.device.type == "cuda" else pillow_decoder(device)
        )
        # Files are read and their headers parsed by several threads, since reads release the GIL: from a
        # cold page cache eight read about 1.5x what one does (docs/benchmarks.md, "Figures behind
        # constants").
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="imagenet-zoo-read")
        # What the decode groups of the batches prepared at once hold: decoded pixels and the files read
        # for them (`_group_bytes`).
        self.budget = DecodeBudget(DECODED_BYTES)

    def __call__(self, sources: Sequence[ImageSource]) -> list[Prepared]:
        """Each photo's info and model input (a row on the device), or its error, in order."""
        items: list[Prepared | None] = [None] * len(sources)
        jpegs: list[Jpeg] = []
        for i, (source, found) in enumerate(zip(sources, self._read_all(sources), strict=True)):
            if isinstance(found, ErrorInfo):
                items[i] = found
            elif found[1].on_device and self.config.interpolation != "nearest":
                jpegs.append((i, *found))
            else:
                items[i] = self._on_cpu(source)
        for group in _grouped(jpegs, _group_bytes, DECODED_BYTES):
            with self.budget.admission() as admit:
                admit(_group_bytes(group))
                self._on_device(group, items)
        return [item for item in items if item is not None]

    def _on_device(self, group: list[Jpeg], items: list[Prepared | None]) -> None:
        """These JPEGs decoded and resized on the device, into `items`: what the decoder refuses goes to
        Pillow, a photo that decodes to another size than its header's (which passed the pixel cap) is
        corrupt."""
        jpegs = []
        for i, data, header in group:
            try:
                jpegs.append((i, read_source(data.path) if isinstance(data, LaterFile) else data, header))
            except ImageError as exc:  # gone or changed since its header was read
                items[i] = ErrorInfo.of(exc)
        decoded = self.decoder([data for _, data, _ in jpegs])
        good = []
        for (i, data, header), image in zip(jpegs, decoded, strict=True):
            if isinstance(image, Exception):
                items[i] = self._on_cpu(data)  # Pillow may read what the device decoder refused
            elif tuple(image.shape[1:]) != (header.height, header.width):
                said, got = f"{header.width}x{header.height}", f"{image.shape[2]}x{image.shape[1]}"
                items[i] = ErrorInfo.of(CorruptImageError(f"decoded to {got}, not the {said} it says"))
            else:
                good.append((i, header, image))
        if good:
            rows = self.resize([oriented(image, header.orientation) for _, header, image in good])
            for (i, header, _), row in zip(good, rows, strict=True):
                items[i] = ErrorInfo.of(row) if isinstance(row, ImageError) else (header.info, row)

    def _read_all(self, sources: Sequence[ImageSource]) -> list[Found]:
        """Each source's bytes (or, for a file read later, its path) and header, or its error: a share of
        the sources per reading thread (a task per photo would cost more than its header)."""
        later = _read_later(sources)
        share = max(1, math.ceil(len(sources) / READ_THREADS))
        pairs = list(zip(sources, later, strict=True))
        parts = [pairs[first : first + share] for first in range(0, len(pairs), share)]
        read = self._readers.map(lambda part: [self._read(*s) for s in part], parts[1:])
        first = [self._read(*s) for s in parts[0]] if parts else []
        return first + [found for part in read for found in part]

    def _read(self, source: ImageSource, later: LaterFile | None) -> Found:
        try:
            if later is not None:
                return later, read_header(later.path, self.max_pixels)
            data = read_source(source)
            return data, read_header(data, self.max_pixels)
        except ImageError as exc:
            return ErrorInfo.of(exc)

    def _on_cpu(self, source: ImageSource) -> Prepared:
        try:
            info, pixels = self.cpu_path(source)
        except ImageError as exc:
            return ErrorInfo.of(exc)
        return info, self.torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)

    def resize(self, images: list[Any]) -> list[Any]:
        """Oriented (3, rows, columns) uint8 images to the model's inputs, as Pillow resizes and crops, or
        the `ImageTooLargeError` of one the device has no memory for: in groups whose resize holds at most
        `RESIZE_BYTES` on the device (`resize_bytes`; a photo larger goes alone)."""
        groups = _grouped(images, self._resize_bytes, RESIZE_BYTES)
        return [row for group in groups for row in self._resized_or_split(group)]

    def _resize_bytes(self, images: list[Any]) -> int:
        heights, widths = (max(int(image.shape[axis]) for image in images) for axis in (1, 2))
        return resize_bytes(len(images), heights, widths, self.config.input_size)

    def _resized_or_split(self, images: list[Any]) -> list[Any]:
        """The group resized; out of memory, its halves one after the other, and a photo alone that still
        does not fit is its error."""
        try:
            return list(self._resize_group(images))
        except Exception as exc:
            if not out_of_memory(exc):
                raise
        if len(images) == 1:
            (height, width) = images[0].shape[1:]
            return [ImageTooLargeError(f"the device has no memory left to resize a {width}x{height} photo")]
        half = len(images) // 2
        return self._resized_or_split(images[:half]) + self._resized_or_split(images[half:])

    def _resize_group(self, images: list[Any]) -> Any:
        torch = self.torch
        heights = [int(image.shape[1]) for image in images]
        widths = [int(image.shape[2]) for image in images]
        batch = torch.zeros(
            (len(images), 3, max(heights), max(widths)), dtype=torch.float32, device=self.device
        )
        for i, image in enumerate(images):  # a copy into the padded batch: the only per-photo step
            batch[i, :, : heights[i], : widths[i]] = image
        rows, columns = resize_matrices(heights, widths, self.config, self.decode, self.device)
        # Columns first, then rows, each pass rounded to 8 bits as Pillow's 8-bit resampling does.
        across = torch.einsum("nchw,nsw->nchs", batch, columns).round_().clamp_(0, 255)
        pixels = torch.einsum("nth,nchs->ncts", rows, across).round_().clamp_(0, 255)
        return pixels.to(torch.uint8).contiguous(memory_format=torch.channels_last)


READ_THREADS = min(8, os.cpu_count() or 1)
# What one decode call may put on the device, by the headers' sizes (3 bytes a pixel): the CPU path's
# budget for what its threads hold decoded at once (a photo larger goes alone).
DECODED_BYTES = DEFAULT_DECODE_BUDGET


# The files a batch holds from its read to its decode: a file larger, or past this many bytes of the
# batch's files, is read when its decode group comes (`LaterFile`), within the decode budget.
LARGE_FILE_BYTES = 16 * 2**20
HELD_BYTES = 128 * 2**20


def _read_later(sources: Sequence[ImageSource]) -> list[LaterFile | None]:
    """Which sources are files to read when their decode group comes: those over `LARGE_FILE_BYTES`, and
    those after the batch's files reach `HELD_BYTES` (a file that cannot be looked at is read now, which
    says what is wrong with it)."""
    later: list[LaterFile | None] = []
    held = 0
    for source in sources:
        file = _file_of(source)
        if file is None or file.size > MAX_FILE_BYTES:
            later.append(None)
        elif file.size > LARGE_FILE_BYTES or held + file.size > HELD_BYTES:
            later.append(file)
        else:
            later.append(None)
            held += file.size
    return later


def _file_of(source: ImageSource) -> LaterFile | None:
    """A source that is a regular file, with its size."""
    if isinstance(source, (bytes, Image.Image, np.ndarray)):
        return None
    path = Path(os.fspath(source))
    try:
        status = path.stat()
    except OSError:
        return None
    return LaterFile(path, status.st_size) if stat.S_ISREG(status.st_mode) else None


def _group_bytes(jpegs: list[Jpeg]) -> int:
    """What decoding these JPEGs holds: their pixels on the device, by their headers (3 bytes a pixel),
    and the files read for them then."""
    pixels = sum(3 * header.width * header.height for _, _, header in jpegs)
    return pixels + sum(data.size for _, data, _ in jpegs if isinstance(data, LaterFile))


def _grouped(items: list[T], cost: Callable[[list[T]], int], limit: int) -> Iterator[list[T]]:
    """The items in order, in groups whose `cost` is at most `limit` (an item over it goes alone)."""
    group: list[T] = []
    for item in items:
        if group and cost([*group, item]) > limit:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


RESIZE_BYTES = 2**30  # what one resize step may hold on the device (`resize_bytes`): five 12-MP photos
# The float64 temporaries of `axis_weights` alive at once, in bytes per element of (photos, size, padded
# length): 25 measured on the CPU for thin photos (65,500 x 1), rounded up.
_WEIGHT_BYTES = 32


def resize_bytes(photos: int, height: int, width: int, size: int) -> int:
    """The most one resize of `photos` photos padded to `height` x `width` holds on the device: the
    padded float32 batch, the weight matrices' temporaries (a thin photo's dominate: a 65,500 x 1 JPEG
    of 17 kB needs 470 MB), the first pass's output."""
    batch = 12 * photos * height * width
    weights = _WEIGHT_BYTES * photos * size * (height + width)
    across = 12 * photos * height * size
    return batch + weights + across


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a failed allocation: the GPU's out-of-memory error, or the CPU allocator's."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


def _filter(name: str, x: Any) -> Any:
    import torch

    x = x.abs()
    if name == "bilinear":
        return torch.clamp(1.0 - x, min=0.0)
    a = -0.5  # Pillow's bicubic
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, 0.0))


def axis_weights(
    lengths: list[int],
    factors: list[int],
    news: list[int],
    firsts: list[int],
    size: int,
    padded: int,
    interpolation: str,
    device: Any,
) -> Any:
    """(photos, size, padded) float32 on `device`: for each photo, the weights of output pixels
    first..first+size of Pillow's resize of an axis of `length` pixels, read as `length / factor` averaged
    blocks (a scaled JPEG decode), to `new` pixels; the rest of the padded axis weighs nothing. Computed
    for all the photos at once, in float64 as Pillow computes its filter."""
    import torch

    def column(values: list[int]) -> Any:
        return torch.tensor(values, dtype=torch.float64, device=device)[:, None, None]

    length, factor, new, first = column(lengths), column(factors), column(news), column(firsts)
    short = torch.ceil(length / factor)  # the axis as decoded at that scale
    scale = short / new
    stretch = torch.clamp(scale, min=1.0)
    centers = (torch.arange(size, dtype=torch.float64, device=device)[None, :, None] + first + 0.5) * scale
    pixel = torch.arange(padded, dtype=torch.float64, device=device)[None, None, :]
    block = torch.floor(pixel / factor)  # the decoded pixel each stored pixel is averaged into
    support = _SUPPORT[interpolation] * stretch
    low = torch.clamp(torch.trunc(centers - support + 0.5), min=0.0)  # Pillow's window, exactly
    high = torch.minimum(torch.trunc(centers + support + 0.5), short)
    inside = (block >= low) & (block < high) & (pixel < length)
    block_size = torch.clamp(torch.minimum(factor, length - block * factor), min=1.0)  # the last: shorter
    weights = torch.where(inside, _filter(interpolation, (block + 0.5 - centers) / stretch), 0.0) / block_size
    return (weights / weights.sum(dim=2, keepdim=True)).float()


def draft_factor(width: int, height: int, config: DataConfig, decode: DecodeMode) -> int:
    """The scale libjpeg would decode at for a "fast" decode (1, 2, 4 or 8), as `images._draft` asks."""
    if decode != "fast":
        return 1
    scale = draft_short_side(config) / min(width, height)
    factor = 1
    while factor < 8 and scale * factor * 2 <= 1.0:
        factor *= 2
    return factor


def resize_matrices(
    heights: list[int], widths: list[int], config: DataConfig, decode: DecodeMode, device: Any
) -> tuple[Any, Any]:
    """(photos, size, max height) and (photos, size, max width) float32 on `device`: each photo's row and
    column weights, crop included."""
    from imagenet_zoo.data.preprocess import crop_plan

    factors = [draft_factor(w, h, config, decode) for h, w in zip(heights, widths, strict=True)]
    plans = [
        crop_plan(math.ceil(w / f), math.ceil(h / f), config)
        for h, w, f in zip(heights, widths, factors, strict=True)
    ]
    size, interpolation = config.input_size, config.interpolation
    rows, columns = (
        axis_weights(
            lengths,
            factors,
            [new[axis] for new, _ in plans],
            [corner[axis] for _, corner in plans],
            size,
            max(lengths),
            interpolation,
            device,
        )
        for axis, lengths in ((1, heights), (0, widths))
    )
    return rows, columns

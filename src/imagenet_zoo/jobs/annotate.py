"""Draw a classification onto its image, as the original tutorial showed it on screen."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from imagenet_zoo.data.images import decode_image
from imagenet_zoo.errors import ImageError, UsageError
from imagenet_zoo.explain import draw_heatmap, fitted
from imagenet_zoo.records import Classification, Prediction


def label_text(prediction: Prediction) -> str:
    return f"{prediction.label}: {prediction.score:.1%}"


def annotate(image: Image.Image, prediction: Prediction) -> Image.Image:
    """A copy of `image` with a banner across the top naming the top label and its probability."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(12, out.height // 20))
    text = label_text(prediction)
    left, top, _right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(4, (bottom - top) // 4)
    draw.rectangle((0, 0, out.width, bottom + 2 * pad), fill=(0, 0, 0))
    draw.text((pad - left, pad), text, fill=(255, 255, 0), font=font)
    return out


SHEET_TILE = 192
SHEET_MAX_TILES = 400  # a contact sheet of thousands of photos is unreadable and very large


def contact_sheet(tiles: list[tuple[Image.Image, str]], *, tile: int = SHEET_TILE) -> Image.Image:
    """One grid image: each photo as a thumbnail with its caption underneath."""
    columns = max(1, min(8, math.ceil(math.sqrt(len(tiles)))))
    rows = max(1, math.ceil(len(tiles) / columns))
    caption = max(14, tile // 10)
    font = ImageFont.load_default(size=caption - 4)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (image, text) in enumerate(tiles):
        thumb = image.convert("RGB")
        thumb.thumbnail((tile - 8, tile - 8))
        x, y = (i % columns) * tile, (i // columns) * (tile + caption)
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        draw.text((x + 4, y + tile), text, fill=(255, 255, 0), font=font)
    return sheet


HEATMAP_SIDE = 1024  # a labelled copy with a heatmap is drawn this many pixels a side at most


class AnnotationWriter:
    """Writes labelled copies of classified photos as results arrive, and optionally a contact sheet;
    a result with an explanation is drawn with its heatmap, on the photo reduced to `HEATMAP_SIDE`.

    `file` receives the single labelled image of a one-photo run; `folder` receives one per photo.
    Photos are decoded a second time here: only runs that ask for annotations pay for it.

    Nothing is written over a file this run did not create (a name in the way gets a number: `cat-2.jpg`)
    unless `overwrite`, never over one of the `inputs`, and never through a symbolic link: each image is
    written to a private temporary file, then linked into place (replaced into place with `overwrite`).
    """

    def __init__(
        self,
        *,
        file: Path | None = None,
        folder: Path | None = None,
        sheet: Path | None = None,
        inputs: Iterable[str] = (),
        overwrite: bool = False,
    ) -> None:
        self.file, self.folder, self.sheet, self.overwrite = file, folder, sheet, overwrite
        self._created: set[Path] = set()
        self._tiles: list[tuple[Image.Image, str]] = []
        self._inputs = {key for key in map(_file_key, inputs) if key is not None} if self.active else set()
        for target in (file, sheet):
            if target is not None:
                self._check_target(target)

    @property
    def active(self) -> bool:
        return bool(self.file or self.folder or self.sheet)

    def _check_target(self, target: Path) -> None:
        """A file named by the user: refused if it is an input, or exists and may not be replaced."""
        if _file_key(str(target)) in self._inputs:
            raise UsageError(f"{target} is one of the photos: an annotation never replaces one")
        if (target.is_symlink() or target.exists()) and not self.overwrite:
            raise UsageError(f"{target} exists: --overwrite replaces it (never a photo being classified)")

    def add(self, result: Classification) -> None:
        if not (self.active and result.ok):
            return
        try:
            image = self._photo(result)
        except ImageError:
            return  # the file changed or vanished since it was classified
        if self.file:
            self._write(annotate(image, result.top), self.file, replace=self.overwrite)
        elif self.folder:
            self._write_into(self.folder, Path(result.source).stem, annotate(image, result.top))
        if self.sheet and len(self._tiles) < SHEET_MAX_TILES:
            image.thumbnail((SHEET_TILE, SHEET_TILE))
            self._tiles.append((image, label_text(result.top)))

    def _photo(self, result: Classification) -> Image.Image:
        """The photo as classified; with a heatmap over it, reduced to `HEATMAP_SIDE` first."""
        if result.explanation is None or result.input is None:
            return decode_image(result.source).image
        photo = decode_image(result.source, min_short_side=HEATMAP_SIDE).image
        photo.thumbnail((HEATMAP_SIDE, HEATMAP_SIDE))
        size = (result.input.width, result.input.height)
        return draw_heatmap(photo, fitted(result.explanation, size, photo.size))

    def finish(self) -> None:
        if self.sheet and self._tiles:
            self._write(contact_sheet(self._tiles), self.sheet, replace=self.overwrite)

    def _write_into(self, folder: Path, stem: str, image: Image.Image) -> None:
        """`image` as `stem.jpg` in `folder`, or `stem-2.jpg`, ... : the first name free to take."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the annotation folder {folder}: {exc}") from exc
        for n in itertools.count(1):
            target = folder / (f"{stem}.jpg" if n == 1 else f"{stem}-{n}.jpg")
            taken = target in self._created or _file_key(str(target)) in self._inputs
            replace = self.overwrite and not target.is_symlink()
            if not taken and (replace or not (target.exists() or target.is_symlink())):
                with contextlib.suppress(FileExistsError):  # appeared meanwhile: the next name
                    self._write(image, target, replace=replace)
                    return

    def _write(self, image: Image.Image, target: Path, *, replace: bool) -> None:
        """Through a private temporary file: linked to `target` (which must not exist: not even as a
        link), or with `replace`, renamed over it (a link there is replaced, not followed)."""
        extension = target.suffix.lower() or ".jpg"
        image_format = Image.registered_extensions().get(extension)
        if image_format is None:
            raise UsageError(f"cannot write the annotated image {target}: unknown file extension {extension}")
        try:
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".annotation-", suffix=extension)
        except OSError as exc:  # a missing folder, no permission
            raise UsageError(f"cannot write the annotated image {target}: {exc}") from exc
        try:
            with os.fdopen(handle, "wb") as out:
                image.save(out, format=image_format)
            (os.replace if replace else os.link)(temporary, target)
        except FileExistsError:
            raise
        except (ValueError, OSError) as exc:  # a format that cannot hold the image
            raise UsageError(f"cannot write the annotated image {target}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):  # renamed into place, or linked and left here
                os.unlink(temporary)
        self._created.add(target)


def _file_key(path: str) -> tuple[int, int] | None:
    """What tells a file apart whatever names it (device and inode), or None for no file."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino

"""Draw a classification onto its image, as the original tutorial showed it on screen."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from imagenet_zoo.data.images import decode_image
from imagenet_zoo.errors import ImageError, UsageError
from imagenet_zoo.explain import draw_heatmap
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


class AnnotationWriter:
    """Writes labelled copies of classified photos as results arrive, and optionally a contact sheet;
    a result with an explanation is drawn with its heatmap.

    `file` receives the single labelled image of a one-photo run; `folder` receives one per photo.
    Photos are decoded a second time here: only runs that ask for annotations pay for it.
    """

    def __init__(
        self, *, file: Path | None = None, folder: Path | None = None, sheet: Path | None = None
    ) -> None:
        self.file, self.folder, self.sheet = file, folder, sheet
        self._names: set[str] = set()
        self._tiles: list[tuple[Image.Image, str]] = []
        if folder:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create the annotation folder {folder}: {exc}") from exc

    @property
    def active(self) -> bool:
        return bool(self.file or self.folder or self.sheet)

    def add(self, result: Classification) -> None:
        if not (self.active and result.ok):
            return
        try:
            image = decode_image(result.source).image
        except ImageError:
            return  # the file changed or vanished since it was classified
        if result.explanation is not None:
            image = draw_heatmap(image, result.explanation)
        if self.file or self.folder:
            target = self.file or self.folder / self._unique_name(Path(result.source).stem)  # type: ignore[operator]
            _save(annotate(image, result.top), target if target.suffix else target.with_suffix(".jpg"))
        if self.sheet and len(self._tiles) < SHEET_MAX_TILES:
            image.thumbnail((SHEET_TILE, SHEET_TILE))
            self._tiles.append((image, label_text(result.top)))

    def finish(self) -> None:
        if self.sheet and self._tiles:
            _save(contact_sheet(self._tiles), self.sheet)

    def _unique_name(self, stem: str) -> str:
        name, n = f"{stem}.jpg", 1
        while name in self._names:
            n += 1
            name = f"{stem}-{n}.jpg"
        self._names.add(name)
        return name


def _save(image: Image.Image, target: Path) -> None:
    try:
        image.save(target)
    except (ValueError, OSError) as exc:  # unknown extension, missing folder, no permission
        raise UsageError(f"cannot write the annotated image {target}: {exc}") from exc

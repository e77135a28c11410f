"""Where the evidence for a class lies: class activation maps (CAM) and Grad-CAM, as heatmaps over the photo.

CAM (Zhou et al., 2016): where the head is global average pooling + a linear layer, the logit of class k is
the spatial mean of M_k = sum_c w_ck F_c (plus the bias), the last feature map F weighted by the classifier's
row for k. The engine computes M as a second output of the same forward pass (`engines/explain.py`), so a
heatmap costs little more than the classification.

Grad-CAM (Selvaraju et al., 2017), for any differentiable head (VGG's dense layers, a neighbour-vote
bundle): weights a_c = the spatial mean of d y_k / d F_c, map sum_c a_c F_c. With global average pooling +
a linear layer, a_c = w_ck / (h w): Grad-CAM is CAM divided by the number of positions, which the tests check.

Both are reported as the map's positive part over its maximum (the evidence *for* the class, in [0, 1]):
the identical grid whichever way it was computed. A map without a positive value is all zeros.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imagenet_zoo.data.labels import ClassLabel
from imagenet_zoo.errors import UsageError
from imagenet_zoo.specs import ExplainMethod

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Explanation:
    """A class's heatmap at the network's resolution, and the box of the photo the network saw."""

    method: ExplainMethod
    class_index: int
    label: str  # the class's name
    grid: np.ndarray  # (rows, columns) float32 in [0, 1], top row first
    region: Box  # (left, top, right, bottom) in the photo's pixels, after EXIF rotation

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "class_index": self.class_index,
            "label": self.label,
            "grid": np.round(self.grid.astype(np.float64), 4).tolist(),
            "region": [round(v, 2) for v in self.region],
        }

    def upsampled(self, width: int, height: int) -> np.ndarray:
        """The grid interpolated (bilinear) to `width` x `height` pixels over the region."""
        image = Image.fromarray(self.grid.astype(np.float32), mode="F")
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))

    def peak(self, resolution: int = 224) -> tuple[float, float]:
        """Where the evidence is strongest, in the photo's pixels: the maximum of the grid interpolated to
        `resolution` x `resolution` (finer than the grid's cells), mapped back through the region."""
        fine = self.upsampled(resolution, resolution)
        row, column = np.unravel_index(int(np.argmax(fine)), fine.shape)
        left, top, right, bottom = self.region
        return (
            float(left + (column + 0.5) * (right - left) / resolution),
            float(top + (row + 0.5) * (bottom - top) / resolution),
        )


# Which class's map to compute: one for every input, or one per input; None: the input's top-1 class.
ClassChoice = int | None | Sequence[int | None]


def explained_classes(logits: np.ndarray, choice: ClassChoice) -> np.ndarray:
    """The class each input's map is for: the given one, or the input's top-1."""
    top = np.asarray(np.argmax(logits, axis=-1), dtype=np.int64)
    if choice is None:
        return top
    if isinstance(choice, int):
        return np.full(len(logits), choice, dtype=np.int64)
    return np.array([top[i] if c is None else c for i, c in enumerate(choice)], dtype=np.int64)


def positive_unit(raw_map: np.ndarray) -> np.ndarray:
    """A raw map's positive part scaled to a maximum of 1 (all zeros if nothing in it is positive)."""
    positive = np.maximum(np.asarray(raw_map, dtype=np.float64), 0.0)
    peak = positive.max(initial=0.0)
    return (positive / peak if peak > 0 else positive).astype(np.float32)


def class_index_of(labels: Sequence[ClassLabel], text: str | int) -> int:
    """A class named by its synset id or label, else by its index (as `--explain-class` takes it): a
    bundle's class named "2" is that class, whatever its index."""
    digits = str(text).strip()
    matches = [] if isinstance(text, int) else _named(labels, text)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{text!r} names classes {matches}: give the index instead")
    if isinstance(text, int) or (digits.isascii() and digits.isdigit()):  # "²" is a digit to str.isdigit
        if len(digits) > len(str(len(labels))) or not 0 <= int(digits) < len(labels):
            raise UsageError(
                f"class index {digits[:20]} is out of range: this model has {len(labels)} classes"
            )
        return int(digits)
    raise UsageError(f"no class is named {text!r}: give an index, a synset id or a label exactly as printed")


def _named(labels: Sequence[ClassLabel], text: str) -> list[int]:
    wanted = text.strip().casefold()
    return [c.index for c in labels if wanted in (c.synset.casefold(), c.name.casefold())]


# A perceptually ordered map from cold to hot (close to "turbo"): dark blue, blue, cyan, green, yellow, red.
_COLOURS = np.array(
    [(48, 18, 59), (50, 120, 240), (30, 200, 200), (120, 230, 90), (250, 200, 40), (210, 40, 20)], np.float32
)
_OPACITY = (0.2, 0.65)  # cold areas barely tinted, so the photo stays recognisable; hot ones clearly


def colour_map(values: np.ndarray) -> np.ndarray:
    """RGB (..., 3) float32 colours for values in [0, 1]."""
    position = np.clip(values, 0.0, 1.0) * (len(_COLOURS) - 1)
    low = np.minimum(position.astype(np.int64), len(_COLOURS) - 2)
    fraction = (position - low)[..., None]
    colours: np.ndarray = _COLOURS[low] * (1 - fraction) + _COLOURS[low + 1] * fraction
    return colours


def draw_heatmap(image: Image.Image, explanation: Explanation) -> Image.Image:
    """A copy of the photo (as classified: after EXIF rotation) with the heatmap over the region the model
    saw, that region outlined, and a legend (method, class, the colour scale from low to high evidence)."""
    out = image.convert("RGB")
    left, top, right, bottom = (round(v) for v in explanation.region)
    width, height = max(1, right - left), max(1, bottom - top)
    values = explanation.upsampled(width, height)[..., None]
    photo = np.asarray(out.crop((left, top, right, bottom)), np.float32)
    opacity = _OPACITY[0] + (_OPACITY[1] - _OPACITY[0]) * values
    blended = photo * (1 - opacity) + colour_map(values[..., 0]) * opacity
    out.paste(Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)), (left, top))
    draw = ImageDraw.Draw(out)
    draw.rectangle(
        (left, top, right - 1, bottom - 1), outline=(255, 255, 255), width=max(1, out.width // 400)
    )
    _draw_legend(draw, out.size, f"{explanation.method.upper()}: {explanation.label}")
    return out


def fitted(explanation: Explanation, photo_size: tuple[int, int], image_size: tuple[int, int]) -> Explanation:
    """The explanation of a photo of `photo_size` pixels, for that photo reduced to `image_size`."""
    scale = image_size[0] / photo_size[0]
    left, top, right, bottom = explanation.region
    return replace(explanation, region=(left * scale, top * scale, right * scale, bottom * scale))


def heatmap_png(
    photo: Image.Image, explanation: Explanation, photo_size: tuple[int, int], *, max_side: int = 512
) -> bytes:
    """`draw_heatmap` as a PNG of at most `max_side` pixels a side, from `photo`: the classified photo, of
    `photo_size` pixels, or a reduced decode of it."""
    image = photo.copy()
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    draw_heatmap(image, fitted(explanation, photo_size, image.size)).save(buffer, "PNG")
    return buffer.getvalue()


def _draw_legend(draw: ImageDraw.ImageDraw, size: tuple[int, int], title: str) -> None:
    """Bottom left: the title, and a colour bar from "low" to "high" evidence."""
    width, height = size
    font = ImageFont.load_default(size=max(10, height // 32))
    bar_width, bar_height, pad = max(60, width // 4), max(6, height // 50), max(3, height // 120)
    _, text_top, text_width, text_bottom = draw.textbbox((0, 0), title, font=font)
    text_height = text_bottom - text_top
    panel_height = text_height * 2 + bar_height + 4 * pad
    x0, y0 = 0, height - panel_height
    draw.rectangle((x0, y0, max(bar_width, text_width) + 2 * pad, height), fill=(0, 0, 0))
    draw.text((x0 + pad, y0 + pad - text_top), title, fill=(255, 255, 255), font=font)
    bar_top = y0 + text_height + 2 * pad
    colours = colour_map(np.linspace(0.0, 1.0, bar_width)).astype(np.uint8)
    for i, colour in enumerate(colours):
        draw.line(
            (x0 + pad + i, bar_top, x0 + pad + i, bar_top + bar_height), fill=tuple(int(c) for c in colour)
        )
    label_top = bar_top + bar_height + pad - text_top
    draw.text((x0 + pad, label_top), "low", fill=(255, 255, 255), font=font)
    high_width = draw.textlength("high", font=font)
    draw.text((x0 + pad + bar_width - high_width, label_top), "high", fill=(255, 255, 255), font=font)

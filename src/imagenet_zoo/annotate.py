"""Draw a classification onto its image, as the original tutorial showed it on screen."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from imagenet_zoo.classifier import Prediction


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

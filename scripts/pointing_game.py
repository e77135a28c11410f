"""The pointing game: does the heatmap point at the right object? `classify --explain` on real photos.

    .venv/bin/python scripts/pointing_game.py [--composites 200] [--size 896] [--model efficientnet_lite0]

Each composite is a 2x2 grid of four photos of the shared sample (one photo per ImageNet class, so four
classes). One quadrant's class is explained (`explain_class`), and the heatmap's peak, mapped back to the
composite through the explanation's region, must fall in that quadrant. Random pointing scores 25 %.
The table shows the score per quadrant and overall.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


def composite(photos: list[Path], size: int) -> Image.Image:
    """Four photos, each resized (shorter side) and centre-cropped to a size/2 square, in a 2x2 grid."""
    half = size // 2
    canvas = Image.new("RGB", (size, size))
    for i, photo in enumerate(photos):
        with Image.open(photo) as image:
            image = image.convert("RGB")
            scale = half / min(image.size)
            resized = image.resize(
                (max(half, round(image.width * scale)), max(half, round(image.height * scale)))
            )
            left, top = (resized.width - half) // 2, (resized.height - half) // 2
            canvas.paste(
                resized.crop((left, top, left + half, top + half)), ((i % 2) * half, (i // 2) * half)
            )
    return canvas


def quadrant(x: float, y: float, size: int) -> int:
    return int(x >= size / 2) + 2 * int(y >= size / 2)


def play(classifier: object, sample: Path, *, composites: int, size: int, seed: int = 0) -> list[bool]:
    """One hit or miss per composite: composite i explains the class of its quadrant i % 4."""
    from imagenet_zoo import imagenet1k

    index = {label.synset: label.index for label in imagenet1k()}
    photos = sorted(sample.glob("*.JPEG"))
    rng = np.random.default_rng(seed)
    hits = []
    for i in range(composites):
        chosen = [photos[j] for j in rng.choice(len(photos), 4, replace=False)]  # one class per photo
        target = i % 4
        image = np.asarray(composite(chosen, size))
        wanted = index[chosen[target].name.split("_")[0]]
        result = classifier.classify(image, explain_class=wanted)  # type: ignore[attr-defined]
        hits.append(quadrant(*result.explanation.peak(), size) == target)
    return hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--composites", type=int, default=200)
    parser.add_argument("--size", type=int, default=896)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    args = parser.parse_args()
    import imagenet_zoo

    classifier = imagenet_zoo.load(args.model, explain=True)
    hits = play(classifier, args.sample, composites=args.composites, size=args.size)
    print(f"pointing game: {args.model}, {args.composites} composites of {args.size}x{args.size}")
    print(f"{'quadrant':<14}{'hits':>6}{'of':>6}{'score':>9}")
    for q, name in enumerate(("top left", "top right", "bottom left", "bottom right")):
        mine = hits[q::4]
        print(f"{name:<14}{sum(mine):>6}{len(mine):>6}{sum(mine) / max(1, len(mine)):>9.1%}")
    print(f"{'all':<14}{sum(hits):>6}{len(hits):>6}{sum(hits) / len(hits):>9.1%}   (random: 25 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Phone-camera copies of the shared sample: 12-megapixel JPEGs, as the photos people classify are.

    .venv/bin/python scripts/make_phone_photos.py OUT_DIR [--sample ../shared/data/imagenet-sample]

Each ImageNet photo is upscaled (bicubic) so its long side is 4,032 pixels (4032x3024 for the usual 4:3),
saved as JPEG quality 90 under its own name (so `eval` still finds its label). As a phone does, every
portrait photo and every third landscape one is stored on its side with an EXIF orientation tag that
turns it upright. The photos are made, not committed: they are 3-5 MB each.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
LONG_SIDE = 4032
EXIF_ORIENTATION = 0x0112
TURN_UPRIGHT = 6  # EXIF: the stored pixels are to be rotated 90 degrees clockwise for display


def phone_jpeg(source: Path, *, sideways: bool) -> bytes:
    """A 12-MP JPEG of `source`, stored on its side with an EXIF orientation tag when `sideways`."""
    with Image.open(source) as image:
        photo = image.convert("RGB")
    scale = LONG_SIDE / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    if sideways:
        photo = photo.transpose(Image.Transpose.ROTATE_90)  # displayed upright after ROTATE_270
        exif[EXIF_ORIENTATION] = TURN_UPRIGHT
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def phone_photo(source: Path, target: Path, *, sideways: bool) -> None:
    target.write_bytes(phone_jpeg(source, sideways=sideways))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the 12-megapixel copies")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="the shared ImageNet sample")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sorted(args.sample.iterdir())):
        with Image.open(source) as image:
            portrait = image.height > image.width
        phone_photo(source, args.out / f"{source.stem}.jpg", sideways=portrait or i % 3 == 0)
    print(f"{i + 1} photos of {LONG_SIDE} px on the long side in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

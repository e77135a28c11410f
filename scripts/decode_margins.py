"""How much resolution a fast decode must keep: top-1 agreement with a full decode, accuracy and decode
time for several margins, on one folder of labelled photos.

    .venv/bin/python scripts/decode_margins.py DIR [--model efficientnet_lite0] [--margins 1,1.5,2,3]

For each margin m, JPEGs are decoded at the smallest DCT scale whose shorter side is at least m times
the model's resize size, then resized in two steps (Pillow's reducing_gap); the baseline decodes every
pixel and resizes in one step (`--decode full`). Decode time is single-core milliseconds per photo
(decode + preprocess), as each decoding thread pays it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import imagenet_zoo
from imagenet_zoo.data.images import decode_image, find_images
from imagenet_zoo.data.preprocess import resize_and_crop
from imagenet_zoo.jobs.evaluate import labelled_photos


def inputs(
    paths: list[str], config: imagenet_zoo.DataConfig, margin: float | None
) -> tuple[np.ndarray, float]:
    """The model input pixels of every photo and the median single-core ms per photo to make one."""
    target = config.resize_shorter_to if config.resize_mode == "crop" else config.input_size
    short_side = None if margin is None else math.ceil(margin * target)
    rows, seconds = [], []
    for path in paths:
        start = time.perf_counter()
        image = decode_image(path, min_short_side=short_side).image
        rows.append(resize_and_crop(image, config, fast=margin is not None))
        seconds.append(time.perf_counter() - start)
    return np.stack(rows), 1000 * statistics.median(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="labelled photos (synset-named, as the shared sample)")
    parser.add_argument("--model", default=imagenet_zoo.DEFAULT_MODEL, help="the model whose input is made")
    parser.add_argument("--margins", default="1,1.5,2,3", help="comma-separated margins to try")
    args = parser.parse_args()
    photos, _ = labelled_photos(args.folder)
    paths, labels = [p.path for p in photos], np.array([p.label for p in photos])
    engine = imagenet_zoo.load_engine(args.model, progress=False)
    config = imagenet_zoo.resolve_data_config(args.model)
    megapixels = statistics.median(
        decode_image(p).info.width * decode_image(p).info.height / 1e6 for p in find_images(paths[:20])
    )

    def top1(batch: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [engine.infer(batch[i : i + 16]).argmax(axis=1) for i in range(0, len(batch), 16)]
        )

    full, full_ms = inputs(paths, config, None)
    reference = top1(full)
    print(f"{len(paths)} photos of {megapixels:.1f} MP (median), {args.model}\n")
    print("| decode | ms/photo (1 core) | top-1 agrees with full | top-1 accuracy |")
    print("|:---|---:|---:|---:|")
    print(f"| full | {full_ms:.1f} | 100.0 % | {np.mean(reference == labels):.1%} |")
    for margin in (float(m) for m in args.margins.split(",")):
        fast, ms = inputs(paths, config, margin)
        answer = top1(fast)
        agrees, accuracy = np.mean(answer == reference), np.mean(answer == labels)
        print(f"| fast, margin {margin:g} | {ms:.1f} | {agrees:.1%} | {accuracy:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bf16 on the torch engine against fp32: speed, top-1 agreement and the close calls computed again in fp32.

    .venv/bin/python scripts/bench_bf16.py [--device cpu] [--batch 32] [--rounds 2]

EfficientNet-Lite0 with its real weights on the 200 shared photos (decoded and preprocessed once,
outside the timing). Rows: fp32; bf16 alone (the close-call margin set to 0); bf16 as the engine runs
it (close calls in fp32). Prints a Markdown table: images/s per round, the share of top-1 answers
identical to fp32, accuracy, and the photos computed again in fp32. bf16 on the CPU needs native bf16.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import imagenet_zoo

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def timed(engine: Any, inputs: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    logits = np.concatenate([engine.infer(inputs[i : i + batch]) for i in range(0, len(inputs), batch)])
    return len(inputs) / (time.perf_counter() - start), logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    photos = sorted(SAMPLE.glob("*.JPEG"))
    classifier = imagenet_zoo.load("lite0", engine="torch", device=args.device, progress=False)
    inputs = classifier.preprocess_images([imagenet_zoo.decode_image(p).image for p in photos])
    synsets = [label.synset for label in classifier.labels]
    truth = np.array([synsets.index(p.name.split("_")[0]) for p in photos])
    fp32: Any = classifier.engine
    bf16: Any = imagenet_zoo.load_engine(
        "lite0", engine="torch", device=args.device, precision="bf16", progress=False
    )
    margin = bf16.close_call_margin
    for engine in (fp32, bf16):
        engine.infer(inputs[: args.batch])  # warm-up: first-call allocations
    rows: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):  # the configurations alternate, so drift hits each alike
        for name, engine, engine_margin in (
            ("fp32", fp32, None),
            ("bf16 alone", bf16, 0.0),
            (f"bf16, close calls (< {margin}) in fp32", bf16, margin),
        ):
            if engine_margin is not None:
                engine.close_call_margin, engine.close_calls = engine_margin, 0
            rate, logits = timed(engine, inputs, args.batch)
            row = rows.setdefault(name, {"rates": []})
            row["rates"].append(rate)
            row["top1"] = logits.argmax(1)
            row["recomputed"] = getattr(engine, "close_calls", 0) if engine_margin is not None else None
    reference = rows["fp32"]["top1"]
    print(
        f"| Lite0, {len(photos)} photos, batch {args.batch}, {args.device} | images/s | top-1 as fp32 "
        "| accuracy | computed again in fp32 |"
    )
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        rates = " / ".join(f"{r:.1f}" for r in row["rates"])
        agreement = (row["top1"] == reference).mean()
        accuracy = (row["top1"] == truth).mean()
        recomputed = "-" if row["recomputed"] is None else f"{row['recomputed']} of {len(photos)}"
        print(f"| {name} | {rates} | {agreement:.1%} | {accuracy:.1%} | {recomputed} |")


if __name__ == "__main__":
    main()

"""SqueezeNet trained from scratch on the tests' texture task, once per seed: accuracy on the 16 photos
held out and on 200 new ones. `python scripts/scratch_seeds.py [--seeds 0 1 2 3] [--learning-rate LR]`

What `tests/test_transfer.py::test_squeezenet_learns_from_scratch` asserts, measured over seeds (a proxy
for the numerics of another CPU): whether the recipe learns every time, and how far above chance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_transfer import _texture_task, held_out_accuracy

from imagenet_zoo.cli import main


def run(seed: int, extra: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _texture_task(root / "textures", 40, seed=3)
        out = root / "scratch"
        argv = [
            "train",
            str(data),
            "--arch",
            "squeezenet1_1",
            "--from-scratch",
            "--epochs",
            "12",
            "--batch-size",
            "8",
            "--output",
            str(out),
            "--seed",
            str(seed),
            *extra,
        ]
        if main(argv) != 0:
            raise SystemExit(f"training failed for seed {seed}")
        validation = json.loads((out / "bundle.json").read_text())["validation"]["accuracy"]
        return validation, held_out_accuracy(out, _texture_task(root / "new", 100, seed=11))


def report() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--learning-rate", default=None)
    args = parser.parse_args()
    extra = ["--learning-rate", args.learning_rate] if args.learning_rate else []
    rows = [(seed, *run(seed, extra)) for seed in args.seeds]
    print("| seed | 16 held out | 200 new |\n|---|---|---|")
    for seed, validation, held_out in rows:
        print(f"| {seed} | {validation:.3f} | {held_out:.3f} |")


if __name__ == "__main__":
    report()

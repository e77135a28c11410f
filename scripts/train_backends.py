"""Fine-tuning and training from scratch under one Keras backend: seconds and held-out accuracy.

    KERAS_BACKEND=tensorflow .venv/bin/python scripts/train_backends.py
    KERAS_BACKEND=torch .venv/bin/python scripts/train_backends.py

The tests' texture task (40 photos a class, 2 classes): Lite0 with its last 6 layers fine-tuned (6 epochs,
augmented) and SqueezeNet 1.1 from scratch (12 epochs), each scored on 200 new photos. Prints one JSON
line per run: what `[train]` is chosen by (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_transfer import _texture_task, held_out_accuracy

from imagenet_zoo.cli import main

RUNS = {
    "fine-tune lite0 (6 layers, 6 epochs)": ["--epochs", "6", "--fine-tune-layers", "6", "--augment"],
    "from scratch squeezenet1_1 (12 epochs)": [
        *("--arch", "squeezenet1_1", "--from-scratch", "--epochs", "12", "--batch-size", "8"),
    ],
}


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _texture_task(root / "textures", 40, seed=3)
        _texture_task(root / "held", 100, seed=11)
        for label, options in RUNS.items():
            out = root / label.split()[0]
            start = time.perf_counter()
            code = main(["train", str(data), "--output", str(out), "--seed", "0", *options])
            seconds = time.perf_counter() - start
            accuracy = held_out_accuracy(out, root / "held")
            row = {"backend": os.environ.get("KERAS_BACKEND"), "run": label, "exit": code}
            print(json.dumps({**row, "seconds": round(seconds, 1), "held_out_accuracy": round(accuracy, 3)}))


if __name__ == "__main__":
    run()

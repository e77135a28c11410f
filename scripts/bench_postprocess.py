"""Post-processing cost per photo: softmax, top-k and the record, for a batch of logits.

    python scripts/bench_postprocess.py [--batch 256] [--top 5]

Prints a table: batches of one (`Classifier.postprocess` on a request of one upload, the service's
commonest), a whole batch (what every job does), and a batch the engine ranked on its device (the torch
engine on a GPU sends back each photo's top-k alone). No model is loaded: the logits are random.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from imagenet_zoo.classifier import Classifier, plan_post, probabilities_of, ranking_of
from imagenet_zoo.data.images import InputInfo
from imagenet_zoo.pipeline import Batch, Forward, PostOptions
from imagenet_zoo.registry import default_registry


class _NoEngine:
    name = "none"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise AssertionError("post-processing only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    spec = default_registry().get("lite0").spec
    classifier = Classifier(spec, _NoEngine())
    plan = plan_post(spec, PostOptions(top=args.top))
    logits = np.random.default_rng(0).normal(0, 3, (args.batch, spec.num_classes)).astype(np.float32)
    info = InputInfo("JPEG", 500, 375, "RGB", False)
    names = [f"photos/{i}.jpg" for i in range(args.batch)]
    prepared = [(info, None)] * args.batch
    ranking = ranking_of(probabilities_of(logits), args.top)
    runs: dict[str, Callable[[], object]] = {
        "batches of one": lambda: [
            list(classifier.postprocess(Batch([name], prepared[:1], Forward(row[None], None)), plan))  # type: ignore[arg-type]
            for name, row in zip(names, logits, strict=True)
        ],
        "one batch": lambda: list(
            classifier.postprocess(Batch(names, prepared, Forward(logits, None)), plan)  # type: ignore[arg-type]
        ),
        "one batch ranked on the device": lambda: list(
            classifier.postprocess(Batch(names, prepared, ranking=ranking), plan)  # type: ignore[arg-type]
        ),
    }
    print(f"| post-processing, batch {args.batch}, top {args.top} | µs per photo (best of 20) |")
    print("|---|---|")
    for name, run in runs.items():
        run()
        best = min(_seconds(run) for _ in range(20))
        print(f"| {name} | {best / args.batch * 1e6:.1f} |")


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

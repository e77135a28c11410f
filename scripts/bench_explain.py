"""What `classify --explain` costs: a folder of photos classified with and without heatmaps, in one run.

    .venv/bin/python scripts/bench_explain.py [--photos DIR] [--repeat 3] [--rounds 3] [--model NAME]

Both classifiers are loaded and warmed up first; then the rounds alternate (plain, explain, plain, ...), so
both see the same machine state, and the table shows each round's rate, the medians and their ratio
(explain time / plain time; the target is <= 1.2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=SAMPLE)
    parser.add_argument("--repeat", type=int, default=3, help="each photo this many times per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    import imagenet_zoo
    from imagenet_zoo.data.images import find_images

    paths = find_images([str(args.photos)], recursive=False) * args.repeat
    runs = {
        "classify": (imagenet_zoo.load(args.model, precision=args.precision), False),
        "classify --explain": (imagenet_zoo.load(args.model, precision=args.precision, explain=True), True),
    }
    for classifier, explain in runs.values():
        classifier.classify(list(paths[:16]), explain=explain)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (classifier, explain) in runs.items():
            start = time.perf_counter()
            results = classifier.classify(list(paths), explain=explain)
            seconds[name].append(time.perf_counter() - start)
            assert all(r.ok for r in results)
    print(
        f"{args.model} {args.precision}, {len(paths)} photos per round ({args.photos}), {args.rounds} rounds"
    )
    print(f"{'run':<20}{'rounds (img/s)':<28}{'median img/s':>14}")
    for name, times in seconds.items():
        rates = "  ".join(f"{len(paths) / t:6.1f}" for t in times)
        print(f"{name:<20}{rates:<28}{len(paths) / statistics.median(times):>14.1f}")
    ratio = statistics.median(seconds["classify --explain"]) / statistics.median(seconds["classify"])
    print(f"time ratio explain / classify: {ratio:.3f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

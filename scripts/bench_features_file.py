"""What writing an extract's features file from its journal costs: a journal of N photos (Lite0's 1,280
features each, one in fifty an error) made once, then the `.npz` written from it R times.

    python scripts/bench_features_file.py [--photos 20000] [--rounds 3]

Prints the journal's size, each round's seconds and the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from imagenet_zoo.jobs.features import journal_record, write_features_file
from imagenet_zoo.records import ErrorInfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        journal = Path(folder) / "features.npz.partial.jsonl"
        with journal.open("w") as out:
            for i in range(args.photos):
                error = ErrorInfo("CorruptImageError", f"photo {i} is cut short") if i % 50 == 7 else None
                features = None if error else rng.random(1280, dtype=np.float32)
                out.write(json.dumps(journal_record(f"photos/{i:06d}.jpg", features, error)) + "\n")
        print(f"journal: {args.photos} photos, {journal.stat().st_size / 2**20:.0f} MB")
        seconds = []
        for round_ in range(args.rounds):
            start = time.perf_counter()
            write_features_file(journal, Path(folder) / "features.npz", "efficientnet_lite0")
            seconds.append(time.perf_counter() - start)
            print(f"round {round_ + 1}: {seconds[-1]:.2f} s")
        print(f"median {statistics.median(seconds):.2f} s")


if __name__ == "__main__":
    main()

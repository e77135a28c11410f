"""What a first use waits for: each variant of a model (logits, features, heatmap) built into a fresh
`IMAGENET_ZOO_HOME` and loaded by the OpenVINO engine, each model in a process of its own, and the whole
`classify --explain` command on a fresh home.

    python scripts/first_use.py [--model efficientnet_lite0] [--model resnet50=WEIGHTS.h5] [--runs 3]

`NAME=FILE` uses that file as the model's weights (copied into the fresh home with the feature
extractor's file made from it, their hashes taken as the published ones, as the tests' generated weights
are; copying and hashing are not timed), `NAME` alone its own weights where they are here, else random
ones. The table
shows each run's seconds, the median, and which of Keras, TensorFlow and SciPy the process imported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"logits": {}, "features": {"task": "features"}, "heatmap": {"explain": True}}

_PROBE = """
import hashlib, json, shutil, sys, time
import h5py
from dataclasses import replace
from pathlib import Path
import imagenet_zoo
from imagenet_zoo.registry import Registry, default_registry
from imagenet_zoo.weights.store import weights_dir

name, file, variants = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = default_registry().get(name)
random = not file and not model.weights_available
if file:  # the file, and a feature extractor's file made from it as the official ones are (no head)
    spec = model.spec
    weights_dir().mkdir(parents=True, exist_ok=True)
    top = weights_dir() / spec.weights.filename
    shutil.copy(file, top)
    served = {"weights": top}
    if spec.weights_notop is not None:
        served["weights_notop"] = shutil.copy(file, weights_dir() / spec.weights_notop.filename)
        with h5py.File(served["weights_notop"], "r+") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
            f.attrs["layer_names"] = [n.encode() for n in names if n != "predictions"]
            del f["predictions"]
    for field, path in served.items():
        official = getattr(spec, field)
        digest = hashlib.md5(Path(path).read_bytes()).hexdigest()
        spec = replace(spec, **{field: replace(official, hash=digest, size=Path(path).stat().st_size)})
    model = replace(model, spec=spec)
seconds = {}
for variant, options in variants.items():
    start = time.perf_counter()
    config = imagenet_zoo.LoadConfig(model=name, **options)
    imagenet_zoo.load_pipeline(config, registry=Registry([model]), progress=False, random_weights=random)
    seconds[variant] = time.perf_counter() - start
imported = sorted({m.split(".")[0] for m in sys.modules} & {"keras", "tensorflow", "scipy"})
print(json.dumps({"seconds": seconds, "random": random, "imported": imported}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="NAME or NAME=WEIGHTS_FILE (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'model':<34} {'variant':<9} {'runs (s)':<22} {'median':>7}  imported")
    for entry in args.model or ["efficientnet_lite0"]:
        name, _, file = entry.partition("=")
        runs = [_probe(name, file) for _ in range(args.runs)]
        for variant in VARIANTS:
            seconds = [run["seconds"][variant] for run in runs]
            shown = " ".join(f"{s:.2f}" for s in seconds)
            label = name + (" (random weights)" if runs[0]["random"] else "")
            imported = ",".join(runs[0]["imported"]) or "none of them"
            print(f"{label:<34} {variant:<9} {shown:<22} {statistics.median(seconds):>7.2f}  {imported}")
    photos = sorted(str(path) for path in (ROOT / "examples").glob("*.jpg"))
    command = [str(Path(sys.executable).with_name("imagenet-zoo")), "classify", "--explain", *photos]
    seconds = [_timed_command(command) for _ in range(args.runs)]
    shown = " ".join(f"{s:.2f}" for s in seconds)
    label = "classify --explain examples/*.jpg"
    print(f"{label:<34} {'process':<9} {shown:<22} {statistics.median(seconds):>7.2f}")
    return 0


def _probe(name: str, file: str) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "IMAGENET_ZOO_HOME": home}
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, name, file, json.dumps(VARIANTS)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode:
        sys.exit(f"{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _timed_command(command: list[str]) -> float:
    home = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        subprocess.run(
            command, env={**os.environ, "IMAGENET_ZOO_HOME": str(home)}, capture_output=True, check=True
        )
        return time.perf_counter() - start
    finally:
        shutil.rmtree(home)


if __name__ == "__main__":
    sys.exit(main())

"""Photos/s of `classify --cluster` (Ray) against the single-process folder job, start-ups subtracted.

    .venv/bin/python scripts/bench_cluster.py [--copies 12] [--phone 100] [--model efficientnet_lite0]

Two photo sets: the shared ImageNet sample linked `--copies` times under distinct names (2,400 photos by
default), and `--phone` 12-megapixel phone JPEGs made from it (scripts/make_phone_photos.py; linked
twice). Each is classified twice by each path, in full and as a small part of it (a sixth), and the rate
is (full - small photos) / (full - small seconds): what both runs pay once (interpreter, Ray connection,
actors, model loading) cancels out; each new Ray cluster first runs one job untimed. Rows: two CPUs on
one Ray node, and two Ray nodes of one CPU each (the tests' cluster); the single process always uses the
same two CPUs. Prints a Markdown table with the CPU model.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
BIN = Path(sys.executable).parent
# `ray start` enables token authentication; the nodes and the clients share this run's token.
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
SMALL_SHARE = 6  # the small run classifies one photo in this many


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=12, help="links to each of the 200 sample photos")
    parser.add_argument("--phone", type=int, default=100, help="12-MP photos to make (0: none)")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        sets = {"ImageNet-sized": _linked(root / "imagenet", sorted(SAMPLE.iterdir()), args.copies)}
        if args.phone:
            sets["12-MP phone"] = _linked(root / "phone", _phone_photos(root / "made", args.phone), 2)
        _classify(sets["ImageNet-sized"][1], root / "warm.jsonl", args.model, [])  # the IR, converted once
        rows = []
        for label, nodes in (("2 CPUs, one node", [2]), ("2 nodes x 1 CPU", [1, 1])):
            with _ray_cluster(nodes) as address:
                # The first job on a new cluster starts its worker processes: not what a job costs.
                _classify(
                    sets["ImageNet-sized"][1], root / f"warm-{len(rows)}", args.model, ["--cluster", address]
                )
                for name, (full, small) in sets.items():
                    single = _rate(full, small, root / "single", args.model, [])
                    ray = _rate(full, small, root / "ray", args.model, ["--cluster", address])
                    rows.append((f"{name}, {label}", len(_files(full)), single, ray))
    print(f"{args.model}, start-ups subtracted; CPU: {_cpu_model()}, {os.cpu_count()} cores")
    print("| photos, CPUs | photos | single process img/s | Ray img/s | Ray / single |")
    print("|---|---:|---:|---:|---:|")
    for label, count, single_rate, ray_rate in rows:
        print(f"| {label} | {count} | {single_rate:.1f} | {ray_rate:.1f} | {ray_rate / single_rate:.0%} |")


def _phone_photos(folder: Path, count: int) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).parent))
    from make_phone_photos import phone_photo

    folder.mkdir()
    made = []
    for i, source in enumerate(sorted(SAMPLE.iterdir())[:count]):
        target = folder / source.name
        phone_photo(source, target, sideways=i % 3 == 0)
        made.append(target)
    return made


def _linked(folder: Path, photos: list[Path], copies: int) -> tuple[Path, Path]:
    """`folder/full` with `copies` links to each photo, and `folder/small` with a sixth of those links."""
    full, small = folder / "full", folder / "small"
    full.mkdir(parents=True)
    small.mkdir()
    for copy in range(copies):
        for i, photo in enumerate(photos):
            name = f"{copy:03d}_{photo.name}"
            (full / name).symlink_to(photo.resolve())
            if (copy * len(photos) + i) % SMALL_SHARE == 0:
                (small / name).symlink_to(photo.resolve())
    return full, small


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def _rate(full: Path, small: Path, output: Path, model: str, options: list[str]) -> float:
    """Photos per second beyond what both runs pay once."""
    seconds = {}
    for photos in (small, full):
        target = output.with_name(f"{output.name}-{full.parent.name}-{photos.name}-{time.monotonic_ns()}")
        if "--cluster" not in options:
            target = target.with_suffix(".jsonl")
        seconds[photos] = _classify(photos, target, model, options)
    return (len(_files(full)) - len(_files(small))) / (seconds[full] - seconds[small])


def _classify(photos: Path, output: Path, model: str, options: list[str]) -> float:
    """Seconds for the whole command."""
    argv = [
        str(BIN / "imagenet-zoo"),
        "classify",
        str(photos),
        "--model",
        model,
        "--output",
        str(output),
        "--quiet",
        *options,
    ]
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.monotonic() - start


@contextlib.contextmanager
def _ray_cluster(nodes: list[int]) -> Iterator[str]:
    """A head (and more nodes) started with `ray start`; `ray stop --force` ends every Ray on the machine."""
    port = "6390"
    head = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--include-dashboard=false",
        f"--num-cpus={nodes[0]}",
        "--object-store-memory=500000000",
    ]
    try:
        subprocess.run(head, check=True, env=ENV, capture_output=True)
        address = f"{_node_ip()}:{port}"
        for cpus in nodes[1:]:
            node = [
                str(BIN / "ray"),
                "start",
                f"--address={address}",
                f"--num-cpus={cpus}",
                "--object-store-memory=500000000",
            ]
            subprocess.run(node, check=True, env=ENV, capture_output=True)
        yield address
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=ENV, capture_output=True, check=False)


def _node_ip() -> str:
    import ray._private.services as services

    return str(services.get_node_ip_address())


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()

"""Images/s of `classify --cluster` (Ray) against the single-process folder job, on this machine.

    .venv/bin/python scripts/bench_cluster.py [--copies 15] [--model efficientnet_lite0]

The photos are the shared ImageNet sample, linked `--copies` times under distinct names. Each row runs
both paths on the same CPUs: one CPU (everything pinned to core 0: the single process with one
decoding thread; a one-CPU Ray head), two CPUs (unpinned; a two-CPU Ray head), and two Ray nodes of one
CPU each (the tests' cluster). A Ray cluster is long-lived, so starting it is not timed; connecting,
starting the model actors and the whole job are. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
BIN = Path(sys.executable).parent
ONE_CPU = ["taskset", "-c", "0"]
# `ray start` enables token authentication; its clients must be told to present the token.
ENV = {**os.environ, "RAY_AUTH_MODE": "token"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=15, help="links to each of the 200 photos")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        photos = _photos(Path(tmp) / "photos", args.copies)
        count = len(list(photos.iterdir()))
        _classify([], photos, Path(tmp) / "warm.jsonl", args.model, [])  # the IR is converted once, here
        rows = []
        for label, pin, workers, nodes in (
            ("1 CPU", ONE_CPU, ["--workers", "1"], [1]),
            ("2 CPUs, one node", [], [], [2]),
            ("2 nodes x 1 CPU", [], [], [1, 1]),
        ):
            single = _classify(pin, photos, Path(tmp) / f"single-{len(rows)}.jsonl", args.model, workers)
            with _ray_cluster(pin, nodes) as address:
                output = Path(tmp) / f"cluster-{len(rows)}"
                ray = _classify(pin, photos, output, args.model, ["--cluster", address])
            rows.append((label, count / single, count / ray))
    print(f"| CPUs ({count} photos, {args.model}) | single process img/s | Ray img/s | Ray / single |")
    print("|---|---:|---:|---:|")
    for label, single_rate, ray_rate in rows:
        print(f"| {label} | {single_rate:.1f} | {ray_rate:.1f} | {ray_rate / single_rate:.0%} |")


def _photos(folder: Path, copies: int) -> Path:
    folder.mkdir()
    for copy in range(copies):
        for photo in sorted(SAMPLE.iterdir()):
            (folder / f"{copy:03d}_{photo.name}").symlink_to(photo)
    return folder


def _classify(pin: list[str], photos: Path, output: Path, model: str, options: list[str]) -> float:
    """Seconds for the whole command."""
    argv = [*pin, str(BIN / "imagenet-zoo"), "classify", str(photos), "--model", model, "--output",
            str(output), "--quiet", *options]  # fmt: skip
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.monotonic() - start


@contextlib.contextmanager
def _ray_cluster(pin: list[str], nodes: list[int]) -> Iterator[str]:
    """A head (and more nodes) started with `ray start`; `ray stop --force` ends every Ray on the machine."""
    port = "6390"
    head = [*pin, str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
            f"--num-cpus={nodes[0]}", "--object-store-memory=500000000"]  # fmt: skip
    try:
        subprocess.run(head, check=True, env=ENV, capture_output=True)
        address = f"{_node_ip()}:{port}"
        for cpus in nodes[1:]:
            node = [*pin, str(BIN / "ray"), "start", f"--address={address}", f"--num-cpus={cpus}",
                    "--object-store-memory=500000000"]  # fmt: skip
            subprocess.run(node, check=True, env=ENV, capture_output=True)
        yield address
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=ENV, capture_output=True, check=False)


def _node_ip() -> str:
    import ray._private.services as services

    return str(services.get_node_ip_address())


if __name__ == "__main__":
    main()

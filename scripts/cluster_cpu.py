"""Where the CPU goes in a `classify --cluster` job: CPU-seconds per kind of process, against the
single-process folder job on the same photos.

    .venv/bin/python scripts/cluster_cpu.py [--nodes 1,1] [--runs 3] [--copies 12]

Starts a local Ray cluster (`--nodes 1,1`: two nodes of one CPU each; `2`: one node of two), runs one
untimed job, then `--runs` timed jobs of the shared sample linked `--copies` times, sampling every
process's CPU time (/proc) four times a second; then the single process, twice. Prints, per run, the
whole command's seconds, how busy the machine was, and the CPU-seconds of each kind of process (Ray
names its workers by what they run: `ray::MapWorker(...)` holds a model actor, `ray::IDLE` a worker
between tasks). A process that starts and ends between two samples is missed: its CPU is then in the
machine's busy share but in no row.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_cluster  # the same photo sets, cluster and command as the bench

TICKS = os.sysconf("SC_CLK_TCK")
Process = tuple[str, float]  # kind, CPU-seconds so far


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1,1", help="CPUs of each Ray node, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    nodes = [int(cpus) for cpus in args.nodes.split(",")]
    print(f"{args.model}; CPU: {bench_cluster._cpu_model()}, {os.cpu_count()} cores; Ray nodes: {nodes}")
    with tempfile.TemporaryDirectory(prefix="cluster-cpu-") as tmp:
        root = Path(tmp)
        photos, _ = bench_cluster._linked(
            root / "photos", sorted(bench_cluster.SAMPLE.iterdir()), args.copies
        )
        count = len(list(photos.iterdir()))

        def job(target: str, options: list[str]) -> Callable[[], float]:
            return lambda: bench_cluster._classify(photos, root / target, args.model, options)

        with bench_cluster._ray_cluster(nodes) as address:
            job("warm", ["--cluster", address])()
            for run in range(args.runs):
                _report(f"Ray run {run + 1}", count, *_sampled(job(f"ray-{run}", ["--cluster", address])))
        for run in range(2):
            _report(f"single process run {run + 1}", count, *_sampled(job(f"single-{run}.jsonl", [])))


def _sampled(work: Callable[[], float]) -> tuple[float, float, dict[str, float]]:
    """(seconds, busy share of the machine, CPU-seconds by kind of process) of `work`."""
    before, seen, done = _processes(), {}, threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            seen.update(_processes())

    sampler = threading.Thread(target=sample)
    idle_before, total_before = _machine()
    sampler.start()
    try:
        seconds = work()
    finally:
        done.set()
        sampler.join()
    idle_after, total_after = _machine()
    seen.update(_processes())
    by_kind: dict[str, float] = collections.Counter()
    for pid, (kind, cpu) in seen.items():
        by_kind[kind] += cpu - before.get(pid, (kind, 0.0))[1]
    busy = 1 - (idle_after - idle_before) / max(1, total_after - total_before)
    return seconds, busy, by_kind


def _processes() -> dict[int, Process]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (
            _kind(stat[stat.index("(") + 1 : stat.rindex(")")], command),
            (int(fields[11]) + int(fields[12])) / TICKS,
        )
    return found


def _kind(name: str, command: list[str]) -> str:
    if command[0].startswith("ray::"):
        return command[0].split("(")[0] + (" (model actor)" if "MapWorker" in command[0] else "")
    if name in ("raylet", "gcs_server"):
        return name
    if any(arg.endswith("/imagenet-zoo") for arg in command[:2]):
        return "imagenet-zoo (the command: Ray's driver, or the single process)"
    return "other: " + " ".join(Path(arg).name for arg in command[:2])[:40]


def _machine() -> tuple[int, int]:
    """(idle, total) ticks of the whole machine so far."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def _report(label: str, count: int, seconds: float, busy: float, by_kind: dict[str, float]) -> None:
    print(f"\n{label}: {count} photos in {seconds:.1f} s (whole command), machine {busy:.0%} busy")
    print("| process | CPU-seconds |\n|---|---:|")
    for kind, cpu in sorted(by_kind.items(), key=lambda item: -item[1]):
        if cpu >= 0.1:
            print(f"| {kind} | {cpu:.1f} |")


if __name__ == "__main__":
    main()

"""What the two folder-job commands (`classify`, `extract`) share: their photo and cluster options, the
run on Ray, and the end-of-run report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from imagenet_zoo.cli import options
from imagenet_zoo.cli.options import finite, positive, refuse
from imagenet_zoo.cli.output import printable
from imagenet_zoo.engines.registry import gpu_present
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.job import JobOptions, JobReport

CLUSTER_OPTIONS = ("partition_format", "max_actors", "stall_timeout")


def add_folder_options(parser: argparse.ArgumentParser, *, batch_size: int) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    parser.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    options.add_load_options(parser, "batch_size", "workers", batch_size=batch_size)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """How a folder job loads and feeds its model, and where it may run (a Ray cluster)."""
    options.add_load_options(parser, *options.ENGINE_OPTIONS)
    add_cluster_options(parser)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("on a Ray cluster (pip install 'imagenet-zoo[ray]')")
    group.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on Ray: local (start one here), auto (the running cluster) or a Ray address; --output is "
        "then a folder of partitions, and a rerun with the same settings skips the photos already in it",
    )
    group.add_argument(
        "--partition-format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="partition files (default jsonl)",
    )
    group.add_argument(
        "--max-actors", type=positive, metavar="N", help="model actors at most (default: one per CPU)"
    )
    group.add_argument(
        "--stall-timeout",
        type=finite,
        default=300.0,
        metavar="SECONDS",
        help="stop the job if no partition is written for this long (default 300); a rerun resumes",
    )


def run_on_cluster(args: argparse.Namespace, options: JobOptions, verb: str) -> int:
    """The job on Ray: partitions in the --output folder; a rerun continues where one stopped."""
    from imagenet_zoo.jobs.cluster import ClusterJob, run_cluster_job

    if not args.output:
        raise UsageError("--cluster writes partition files into a folder: give it with --output DIR")
    refuse(args, ["workers"], "with --cluster: each model actor decodes with the threads of its CPUs")
    job = ClusterJob(
        **{field.name: getattr(options, field.name) for field in dataclasses.fields(JobOptions)},
        output=args.output,
        address=args.cluster,
        partition_format=args.partition_format,
        max_actors=args.max_actors,
        stall_timeout_s=args.stall_timeout,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    start = time.monotonic()
    report = dataclasses.replace(run_cluster_job(job), seconds=time.monotonic() - start)
    summarize(report, args.output, verb=verb)
    return 1 if report.failures else 0


def refuse_cluster_options(args: argparse.Namespace) -> None:
    refuse(args, CLUSTER_OPTIONS, "without --cluster")


_MAX_LISTED_FAILURES = 20


def summarize(report: JobReport, results: str | Path | None, verb: str = "classified") -> None:
    """The end-of-run report on stderr: counts, rate and the files that could not be processed (`results`:
    a file, a folder, or an object-storage URL)."""
    failures = report.failures
    if report.choice is not None and (report.choice.device != "cpu" or gpu_present()):
        choice = report.choice
        print(
            f"imagenet-zoo: ran on {choice.device} with the {choice.engine} engine ({choice.reason})",
            file=sys.stderr,
        )
    if results is None and not failures:
        return
    rate = report.done / max(report.seconds, 1e-9)
    done = f"{report.done - len(failures)} of {report.done} photos"
    lines = [f"imagenet-zoo: {verb} {done} in {report.seconds:.1f} s ({rate:.1f}/s)"]
    if report.skipped:
        lines.append(f"  skipped {report.skipped} already in {results}")
    if results:
        lines.append(f"  results: {results}")
    if failures:
        lines.append(f"  {len(failures)} failed:")
        lines.extend(
            f"    {printable(source)}: {e.type}: {printable(e.message)}"
            for source, e in failures[:_MAX_LISTED_FAILURES]
        )
        if len(failures) > _MAX_LISTED_FAILURES:
            lines.append(f"    ... and {len(failures) - _MAX_LISTED_FAILURES} more (each is in the results)")
    print("\n".join(lines), file=sys.stderr)

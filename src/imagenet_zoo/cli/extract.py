"""`imagenet-zoo extract`: pooled ImageNet features of photos, for transfer learning (`.npz`, `.parquet`,
or a folder of partitions on a Ray cluster)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagenet_zoo.cli import options
from imagenet_zoo.cli.folder import (
    add_folder_options,
    add_model_options,
    refuse_cluster_options,
    run_on_cluster,
    summarize,
)
from imagenet_zoo.cli.options import refuse
from imagenet_zoo.jobs.folder import FolderJob, run_folder_job
from imagenet_zoo.jobs.job import JobOptions

NAME = "extract"
HELP = "pooled ImageNet features of photos, for transfer learning"
VERB = "extracted features of"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    add_folder_options(parser, batch_size=16)
    options.add_model_option(parser)
    parser.add_argument(
        "--output",
        required=True,
        metavar="FILE",
        help="features.npz or features.parquet (a folder with --cluster); the features stream to "
        "FILE.partial.jsonl until the end",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a job that stopped: skip the photos already in FILE.partial.jsonl (written with the "
        "same settings)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --output, or a stopped job's partial file"
    )
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    job = JobOptions(
        sources=args.photos, recursive=args.recursive, load=options.load_config(args, task="features")
    )
    if args.cluster:
        refuse(args, ["resume", "overwrite"], "with --cluster: a rerun with the same settings resumes")
        return run_on_cluster(args, job, verb=VERB)
    refuse_cluster_options(args)
    folder_job = FolderJob(
        **vars(job),
        output=Path(args.output),
        resume=args.resume,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    report = run_folder_job(folder_job)
    shape = "x".join(map(str, report.feature_shape or ()))
    print(f"imagenet-zoo: {shape} features from {args.model} written to {args.output}", file=sys.stderr)
    summarize(report, folder_job.output, verb=VERB)
    return 1 if report.failures else 0

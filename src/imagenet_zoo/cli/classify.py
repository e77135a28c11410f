"""`imagenet-zoo classify`: top-k ImageNet labels for photos, folders or globs; on stdout, into a results
file, or on a Ray cluster. Every option works on every path that takes it, or is refused saying why."""

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
from imagenet_zoo.cli.output import printable
from imagenet_zoo.errors import UsageError
from imagenet_zoo.explain import Explanation
from imagenet_zoo.jobs.folder import FolderJob, run_folder_job
from imagenet_zoo.jobs.job import JobOptions
from imagenet_zoo.jobs.results import JsonArrayWriter
from imagenet_zoo.pipeline import PostOptions
from imagenet_zoo.records import Classification

NAME = "classify"
HELP = "top-k ImageNet labels for photos, folders or globs"
LOCAL_FILES = ("annotate", "annotate_dir", "sheet", "overwrite")  # written on this machine


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    add_folder_options(parser, batch_size=8)
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="stream results to FILE (.csv, .jsonl or .json; a folder with --cluster)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip photos already in --output (written with the same settings)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show what the decoder warned about each photo (table)"
    )
    options.add_list_option(
        parser,
        "--groups",
        [],
        type=options.words,
        metavar="WORD[,WORD...]",
        help="also the probability of WordNet groups: dog,bird (`groups`)",
    )
    parser.add_argument(
        "--top-groups",
        type=options.top_groups,
        metavar="K",
        help="also the K most likely groups at --group-depth",
    )
    parser.add_argument(
        "--group-depth",
        type=int,
        default=6,
        metavar="D",
        help="is-a steps below 'entity' for --top-groups (default 6: animal, plant, container, ...)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also a heatmap of where the evidence for the top-1 class lies (drawn by --annotate/--sheet)",
    )
    parser.add_argument(
        "--explain-class",
        metavar="LABEL|INDEX",
        help="explain this class instead of the top-1 (an index, synset id or label; implies --explain)",
    )
    options.add_model_option(parser)
    parser.add_argument("--top", type=options.top_k, default=5, help="how many labels per photo (default 5)")
    options.add_format_option(parser, "table", "json")
    parser.add_argument(
        "--annotate", metavar="OUT", help="write labelled images: a file for one photo, else a folder"
    )
    parser.add_argument("--annotate-dir", metavar="DIR", help="write a labelled copy of every photo into DIR")
    parser.add_argument(
        "--sheet", metavar="FILE", help="write a contact sheet of labelled thumbnails to FILE"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let --output replace a results file that holds records, and --annotate, --annotate-dir and "
        "--sheet replace files in their way (never a photo being classified); without it, a labelled copy "
        "takes the next free name (cat-2.jpg)",
    )
    options.add_load_options(parser, "resize")
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options.check_top(args, [args.model])
    job = JobOptions(
        sources=args.photos, recursive=args.recursive, load=options.load_config(args), post=_post(args)
    )
    if args.cluster:
        refuse(args, LOCAL_FILES, "with --cluster: labelled copies and sheets run on one machine")
        refuse(args, ["verbose", "format"], "with --cluster: results go to the partitions in --output")
        return run_on_cluster(args, job, verb="classified")
    refuse_cluster_options(args)
    if args.output:
        refuse(
            args,
            ["format", "verbose"],
            "with --output: the file's suffix is its format, and each record "
            "holds its decoder warnings (input.warnings)",
        )
    elif args.format == "json":
        refuse(args, ["verbose"], "with --format json: each result holds its decoder warnings")
    folder_job = FolderJob(
        **vars(job),
        output=_path(args.output),
        resume=args.resume,
        annotate=_path(args.annotate),
        annotate_dir=_path(args.annotate_dir),
        sheet=_path(args.sheet),
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    if folder_job.output:  # results go to the file; the terminal gets the summary
        report = run_folder_job(folder_job)
    else:
        with JsonStdout() if args.format == "json" else TableStdout(verbose=args.verbose) as sink:
            report = run_folder_job(folder_job, on_result=sink.write)
    summarize(report, folder_job.output)
    return 1 if report.failures else 0


def _post(args: argparse.Namespace) -> PostOptions:
    if "group_depth" in vars(args).get(options.GIVEN, set()) and not args.top_groups:
        raise UsageError("--group-depth is the depth of --top-groups: give --top-groups K too")
    return PostOptions(
        top=args.top,
        groups=tuple(args.groups),
        top_groups=(args.top_groups, args.group_depth) if args.top_groups else None,
        explain=args.explain,
        explain_class=args.explain_class,
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


class TableStdout:
    """Each result as table rows on stdout, as it arrives."""

    def __init__(self, *, verbose: bool) -> None:
        self.verbose = verbose

    def write(self, result: Classification) -> None:
        sys.stdout.write(results_table([result], verbose=self.verbose) + "\n")
        sys.stdout.flush()

    def __enter__(self) -> TableStdout:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class JsonStdout:
    """Exactly one JSON array on stdout, streamed element by element."""

    def __enter__(self) -> JsonStdout:
        self._array = JsonArrayWriter(sys.stdout, indent=2)
        return self

    def write(self, result: Classification) -> None:
        self._array.write(result.to_dict())

    def __exit__(self, *exc: object) -> None:
        self._array.close()


def results_table(results: list[Classification], *, verbose: bool = False) -> str:
    """Each result's top-k and asked-for groups; with `verbose`, what the decoder warned about too."""
    lines: list[str] = []
    for result in results:
        source = printable(result.source)
        if result.error is not None:
            lines.append(f"{source}  ERROR {result.error.type}: {printable(result.error.message)}")
        else:
            info = result.input
            described = f"{info.format or 'array'} {info.width}x{info.height} {info.mode}" if info else ""
            lines.append(f"{source}  [{printable(result.model)}; {described}]")
            lines.extend(
                f"  {p.rank:>2}  {p.score:7.2%}  {printable(p.label):<32} {printable(p.synset)}  {p.index:>3}"
                for p in result.predictions
            )
            lines.extend(
                f"  group {printable(g.name):<25} {g.score:7.2%}  {g.synset}  ({g.classes} classes)"
                for g in result.groups
            )
            if result.explanation is not None:
                lines.extend(_heatmap_lines(result.explanation))
            if verbose and info:
                lines.extend(f"  warning: {printable(w)}" for w in info.warnings)
        lines.append("")
    return "\n".join(lines)


_SHADES = " .:-=+*#%@"  # low to high evidence


def _heatmap_lines(explanation: Explanation) -> list[str]:
    """The heatmap in text: where the evidence lies, and the grid drawn with one character per cell."""
    x, y = explanation.peak()
    head = (
        f"  {explanation.method} for {printable(explanation.label)} ({explanation.class_index}): "
        f"strongest at x={x:.0f} y={y:.0f}"
    )
    rows = (
        "".join(_SHADES[min(len(_SHADES) - 1, int(v * len(_SHADES)))] * 2 for v in row)
        for row in explanation.grid
    )
    return [head, *(f"    |{row}|" for row in rows)]

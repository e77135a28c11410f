"""What each subcommand does; output formatting lives in `cli/output.py`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagenet_zoo.api import resolve_model
from imagenet_zoo.classifier import Classification
from imagenet_zoo.cli import output
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.cluster import ClusterJob, run_job
from imagenet_zoo.jobs.folder import FolderJob, run_folder_job
from imagenet_zoo.jobs.results import JobReport, JsonArrayWriter, Task
from imagenet_zoo.registry import default_registry, list_models


def classify(args: argparse.Namespace) -> int:
    if args.cluster:
        if args.annotate or args.annotate_dir or args.sheet or args.explain or args.explain_class:
            raise UsageError(
                "--annotate, --annotate-dir, --sheet and --explain run on one machine, not with --cluster"
            )
        return _on_cluster(args, "classify", resize=args.resize, top=args.top)
    job = FolderJob(
        sources=args.photos,
        output=_path(args.output),
        model=args.model,
        engine=args.engine,
        precision=args.precision,
        resize=args.resize,
        top=args.top,
        batch_size=args.batch_size,
        workers=args.workers,
        decode=args.decode,
        recursive=args.recursive,
        resume=args.resume,
        groups=tuple(args.groups),
        top_groups=(args.top_groups, args.group_depth) if args.top_groups else None,
        explain=args.explain,
        explain_class=args.explain_class,
        annotate=_path(args.annotate),
        annotate_dir=_path(args.annotate_dir),
        sheet=_path(args.sheet),
        progress=False if args.quiet else None,
    )
    if job.output:  # results go to the file; the terminal gets the summary
        report = run_folder_job(job)
    else:
        with _JsonStdout() if args.format == "json" else _TableStdout(verbose=args.verbose) as sink:
            report = run_folder_job(job, on_result=sink.write)
    _summarize(report, job.output)
    return 1 if report.failures else 0


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


class _TableStdout:
    """Each result as table rows on stdout, as it arrives."""

    def __init__(self, *, verbose: bool) -> None:
        self.verbose = verbose

    def write(self, result: Classification) -> None:
        sys.stdout.write(output.results_table([result], verbose=self.verbose) + "\n")
        sys.stdout.flush()

    def __enter__(self) -> _TableStdout:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _JsonStdout:
    """Exactly one JSON array on stdout, streamed element by element."""

    def __enter__(self) -> _JsonStdout:
        self._array = JsonArrayWriter(sys.stdout, indent=2)
        return self

    def write(self, result: Classification) -> None:
        self._array.write(result.to_dict())

    def __exit__(self, *exc: object) -> None:
        self._array.close()


_MAX_LISTED_FAILURES = 20


def _summarize(
    report: JobReport,
    results_path: str | Path | None,  # a file, a folder, or an object-storage URL
    verb: str = "classified",
) -> None:
    """The end-of-run report on stderr: counts, rate and the files that could not be processed."""
    failures = report.failures
    if results_path is None and not failures:
        return
    rate = report.done / max(report.seconds, 1e-9)
    done = f"{report.done - len(failures)} of {report.done} photos"
    lines = [f"imagenet-zoo: {verb} {done} in {report.seconds:.1f} s ({rate:.1f}/s)"]
    if report.skipped:
        lines.append(f"  skipped {report.skipped} already in {results_path}")
    if results_path:
        lines.append(f"  results: {results_path}")
    if failures:
        lines.append(f"  {len(failures)} failed:")
        lines.extend(
            f"    {output.printable(source)}: {e.type}: {output.printable(e.message)}"
            for source, e in failures[:_MAX_LISTED_FAILURES]
        )
        if len(failures) > _MAX_LISTED_FAILURES:
            lines.append(f"    ... and {len(failures) - _MAX_LISTED_FAILURES} more (each is in the results)")
    print("\n".join(lines), file=sys.stderr)


def _emit(rows: Any, fmt: str, table: Callable[[Any], str]) -> None:
    """`rows` on stdout as JSON, or as the table `table` makes of them."""
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table(rows))


def models(args: argparse.Namespace) -> int:
    registry = default_registry()
    _emit(output.model_rows([registry.get(name) for name in registry.names(args.pattern)]), args.format,
          output.models_table)  # fmt: skip
    return 0


def groups(args: argparse.Namespace) -> int:
    from imagenet_zoo.data.hierarchy import wordnet

    hierarchy = wordnet()
    rows = [
        {"synset": s.id, "name": s.name, "lemmas": list(s.lemmas), "depth": hierarchy.depths[s.id],
         "classes": len(hierarchy.classes_under(s.id))}
        for s in hierarchy.matching(args.word)
    ]  # fmt: skip
    if not rows:
        raise UsageError(f"no WordNet group above the ImageNet classes is named like {args.word!r}")
    _emit(rows, args.format, output.groups_table)
    return 0


def weights(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    include_top = not args.notop
    if args.action != "import" and args.file:
        raise UsageError(f"weights {args.action} takes no FILE")
    if args.action == "fetch":
        path = model.weights.fetch(model.spec, include_top=include_top)
    elif args.action == "verify":
        path = model.weights.verify(model.spec, include_top=include_top)
        print(f"ok: {path}", file=sys.stderr)
    elif args.action == "import":
        if not args.file:
            raise UsageError("weights import needs the FILE to import")
        path = model.weights.import_file(model.spec, Path(args.file), include_top=include_top)
    else:
        path = model.weights.path(model.spec, include_top=include_top)
        if not model.weights.is_present(model.spec, include_top=include_top):
            print(path)
            print(
                f"imagenet-zoo: not present yet; `imagenet-zoo weights fetch {model.spec.name}`",
                file=sys.stderr,
            )
            return 1
    print(path)
    return 0


def quantize(args: argparse.Namespace) -> int:
    from imagenet_zoo.engines.quantize import quantize as quantize_model

    report = quantize_model(resolve_model(args.model), Path(args.calibration), samples=args.samples)
    for path in report.skipped:
        print(f"imagenet-zoo: skipped unreadable calibration file {path}", file=sys.stderr)
    print(f"{report.model}: int8 model calibrated on {report.samples} photos: {report.path}")
    return 0


def selftest(args: argparse.Namespace) -> int:
    from imagenet_zoo.selftest import run

    checks = []
    print(output.selftest_header())
    for check in run():
        checks.append(check)
        print(output.selftest_row(check), flush=True)
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def bench(args: argparse.Namespace) -> int:
    from imagenet_zoo.jobs import bench as benchmark

    if args.seconds <= 0:
        raise UsageError("--seconds must be positive")
    plan = benchmark.BenchPlan(
        models=args.model,
        engines=args.engine,
        precisions=args.precision,
        batch_sizes=args.batch_size,
        seconds=args.seconds,
        calibration=args.calibration,
        end_to_end=Path(args.end_to_end) if args.end_to_end else None,
        cold_start=not args.no_cold_start,
    )
    sgemm = benchmark.measure_sgemm_gflops()
    env = benchmark.environment(sgemm)
    live = args.format == "table"
    if live:
        print(output.bench_preamble(env))
        print(output.bench_header())
    rows = benchmark.run_plan(
        plan, sgemm, report=lambda row: print(output.bench_row(row), flush=True) if live else None
    )
    if args.format == "json":
        json.dump([output.bench_dict(row) for row in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "markdown":
        sys.stdout.write(output.bench_markdown(env, rows))
    else:
        sys.stdout.write(output.bench_end_to_end_notes(rows))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from imagenet_zoo.jobs.evaluate import MissingWeights, evaluate_models

    results = evaluate_models(
        Path(args.source), args.model, engine=args.engine, precision=args.precision,
        batch_size=args.batch_size, workers=args.workers, decode=args.decode, output=_path(args.output),
        group=args.group,
        warn=lambda message: print(f"imagenet-zoo: {message}", file=sys.stderr),
    )  # fmt: skip
    rows = [
        {"model": r.model, "error": r.message} if isinstance(r, MissingWeights) else output.accuracy_dict(r)
        for r in results
    ]
    _emit(rows, args.format, output.accuracy_table)
    return 1 if any("error" in row for row in rows) else 0


def compare(args: argparse.Namespace) -> int:
    from imagenet_zoo.jobs.compare import compare as compare_models

    names = list_models() if args.models == ["all"] else args.models
    models = [resolve_model(name) for name in names]
    statuses, comparisons = compare_models(
        args.photos, models, top=args.top, engine=args.engine, precision=args.precision, decode=args.decode
    )
    if args.format == "json":
        report = {
            "models": [{"model": s.name, "ready": s.ready, "fetch": s.fetch_command} for s in statuses],
            "photos": [c.to_dict() for c in comparisons],
        }
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(output.comparison_table(statuses, comparisons))
    failed = any(not a.result.ok for c in comparisons for a in c.answers)
    return 1 if failed or not any(s.ready for s in statuses) else 0


def serve(args: argparse.Namespace) -> int:
    from imagenet_zoo.server import Settings
    from imagenet_zoo.server.run import serve as run_server
    from imagenet_zoo.server.settings import read_api_keys

    sizes = (args.max_upload_mb, args.max_upload_buffer_mb, args.max_megapixels, args.deadline)
    if min(sizes) <= 0 or min(args.drain_seconds, args.max_batch_delay_ms) < 0:
        raise UsageError(
            "--max-upload-mb, --max-upload-buffer-mb, --max-megapixels and --deadline must be positive, "
            "--drain-seconds and --max-batch-delay-ms not negative"
        )
    settings = Settings(
        models=tuple(dict.fromkeys(args.model)),
        engine=args.engine,
        precision=args.precision,
        decode=args.decode,
        max_upload_mb=args.max_upload_mb,
        max_queue=args.max_queue,
        max_upload_buffer_mb=args.max_upload_buffer_mb,
        max_pixels=int(args.max_megapixels * 1e6),
        deadline_s=args.deadline,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        api_keys=read_api_keys(Path(args.api_key_file)) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin),
    )
    run_server(
        settings, host=args.host, port=args.port, drain_s=args.drain_seconds, access_log=args.access_log
    )
    return 0


def extract(args: argparse.Namespace) -> int:
    if args.cluster:
        return _on_cluster(args, "extract")
    job = FolderJob(
        sources=args.photos, task="extract", output=Path(args.output), model=args.model, engine=args.engine,
        precision=args.precision, batch_size=args.batch_size, workers=args.workers, recursive=args.recursive,
        decode=args.decode, progress=False if args.quiet else None,
    )  # fmt: skip
    report = run_folder_job(job)
    shape = "x".join(map(str, report.feature_shape or ()))
    print(f"imagenet-zoo: {shape} features from {args.model} written to {args.output}", file=sys.stderr)
    _summarize(report, job.output, verb="extracted features of")
    return 1 if report.failures else 0


def _on_cluster(args: argparse.Namespace, task: Task, **options: Any) -> int:
    """The same job on Ray: partitions in the --output folder; a rerun continues where one stopped."""
    if not args.output:
        raise UsageError("--cluster writes partition files into a folder: give it with --output DIR")
    if args.stall_timeout <= 0:
        raise UsageError("--stall-timeout must be positive")
    job = ClusterJob(
        task=task,
        sources=args.photos,
        output=args.output,
        address=args.cluster,
        model=args.model,
        engine=args.engine,
        precision=args.precision,
        batch_size=args.batch_size,
        recursive=args.recursive,
        decode=args.decode,
        partition_format=args.partition_format,
        max_actors=args.max_actors,
        stall_timeout_s=args.stall_timeout,
        progress=not args.quiet and sys.stderr.isatty(),
        **options,
    )
    start = time.monotonic()
    report = dataclasses.replace(run_job(job), seconds=time.monotonic() - start)
    _summarize(report, args.output, verb="classified" if task == "classify" else "extracted features of")
    return 1 if report.failures else 0


def train(args: argparse.Namespace) -> int:
    from imagenet_zoo.transfer.training import TrainConfig, confusion_text
    from imagenet_zoo.transfer.training import train as train_bundle

    if args.fine_tune_layers < 0:
        raise UsageError("--fine-tune-layers cannot be negative")
    if args.arch and not args.from_scratch:
        raise UsageError("--arch names the architecture to train --from-scratch; for transfer use --base")
    config = TrainConfig(
        base=args.arch or args.base,
        epochs=args.epochs,
        fine_tune_layers=args.fine_tune_layers,
        val_split=args.val_split,
        augment=args.augment,
        batch_size=args.batch_size,
        seed=args.seed,
        from_scratch=args.from_scratch,
        resume=args.resume,
        learning_rate=args.learning_rate,
        head=args.head,
        decode=args.decode,
    )
    report = train_bundle(
        Path(args.source), Path(args.output), config, log=lambda line: print(line, flush=True)
    )
    for path in report.skipped:
        print(f"imagenet-zoo: skipped unreadable photo {path}", file=sys.stderr)
    if report.head_scores:
        scores = ", ".join(f"{name} {score:.1%}" for name, score in report.head_scores.items())
        print(f"kept the {report.head} head: the better balanced accuracy on the held-out photos ({scores})")
    print(
        f"validation: accuracy {report.accuracy:.1%}, balanced accuracy {report.balanced_accuracy:.1%} "
        f"on {report.val_size} photos\n{confusion_text(report.confusion, report.classes)}\n"
        f"bundle: {report.bundle} (use it as --model {report.bundle})"
    )
    return 0

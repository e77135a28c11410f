"""What each subcommand does; output formatting lives in `cli/output.py`."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from imagenet_zoo.annotate import AnnotationWriter
from imagenet_zoo.api import load
from imagenet_zoo.classifier import Classification, ErrorInfo
from imagenet_zoo.cli import output
from imagenet_zoo.cluster import ClusterJob, Task, run_job
from imagenet_zoo.errors import UsageError
from imagenet_zoo.evaluate import LabelledPhoto
from imagenet_zoo.images import find_images
from imagenet_zoo.progress import Progress
from imagenet_zoo.registry import default_registry
from imagenet_zoo.results_io import JsonArrayWriter, ResultsFile


def classify(args: argparse.Namespace) -> int:
    if args.cluster:
        if args.annotate or args.annotate_dir or args.sheet:
            raise UsageError("--annotate, --annotate-dir and --sheet run on one machine, not with --cluster")
        return _on_cluster(args, "classify", resize=args.resize, top=args.top)
    sources = find_images(args.photos, recursive=args.recursive)
    if not sources:
        raise UsageError("no image files found (use --recursive for sub-folders)")
    if args.resume and not args.output:
        raise UsageError("--resume needs --output")
    results_file = ResultsFile(Path(args.output), top=args.top, resume=args.resume) if args.output else None
    todo = [s for s in sources if results_file is None or s not in results_file.done]
    annotations = _annotation_writer(args, single=len(sources) == 1)
    classifier = load(
        args.model,
        engine=args.engine,
        precision=args.precision,
        resize=args.resize,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    sink = results_file or (_JsonStdout() if args.format == "json" else _TableStdout())
    progress = Progress("Classifying", len(todo), unit="img", enabled=False if args.quiet else None)
    failures: list[tuple[str, ErrorInfo]] = []
    start = time.monotonic()
    with sink:
        for result in classifier.iter_classify(todo, top=args.top):
            sink.write(result)
            annotations.add(result)
            progress.update()
            if result.error is not None:
                failures.append((result.source, result.error))
    progress.close()
    annotations.finish()
    results_path = results_file.path if results_file else None
    _summarize(len(todo), len(sources) - len(todo), failures, time.monotonic() - start, results_path)
    return 1 if failures else 0


def _annotation_writer(args: argparse.Namespace, *, single: bool) -> AnnotationWriter:
    """`--annotate OUT`: a file for one photo, a folder for several. `--annotate-dir`: always a folder."""
    folder = args.annotate_dir or (args.annotate if not single else None)
    return AnnotationWriter(
        file=Path(args.annotate) if args.annotate and single else None,
        folder=Path(folder) if folder else None,
        sheet=Path(args.sheet) if args.sheet else None,
    )


class _TableStdout:
    def write(self, result: Classification) -> None:
        sys.stdout.write(output.results_table([result]) + "\n")
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


class _Error(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def message(self) -> str: ...


def _summarize(
    done: int,
    skipped: int,
    failures: Sequence[tuple[str, _Error]],
    seconds: float,
    results_path: str | Path | None,  # a file, a folder, or an object-storage URL
    verb: str = "classified",
) -> None:
    """The end-of-run report on stderr: counts, rate and the files that could not be classified."""
    if results_path is None and not failures:
        return
    rate = done / max(seconds, 1e-9)
    lines = [
        f"imagenet-zoo: {verb} {done - len(failures)} of {done} photos in {seconds:.1f} s ({rate:.1f}/s)"
    ]
    if skipped:
        lines.append(f"  skipped {skipped} already in {results_path}")
    if results_path:
        lines.append(f"  results: {results_path}")
    if failures:
        lines.append(f"  {len(failures)} failed:")
        lines.extend(f"    {source}: {e.type}: {e.message}" for source, e in failures[:_MAX_LISTED_FAILURES])
        if len(failures) > _MAX_LISTED_FAILURES:
            lines.append(f"    ... and {len(failures) - _MAX_LISTED_FAILURES} more (each is in the results)")
    print("\n".join(lines), file=sys.stderr)


def models(args: argparse.Namespace) -> int:
    rows = output.model_rows(default_registry())
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(output.models_table(rows))
    return 0


def weights(args: argparse.Namespace) -> int:
    model = default_registry().get(args.model)
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
    from imagenet_zoo.quantize import quantize as quantize_model

    report = quantize_model(default_registry().get(args.model), Path(args.calibration), samples=args.samples)
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
    from imagenet_zoo import bench as benchmark

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
    from imagenet_zoo.evaluate import evaluate as evaluate_model
    from imagenet_zoo.evaluate import labelled_photos

    registry = default_registry()
    rows: list[dict[str, object]] = []
    with _EvalOutput(Path(args.output) if args.output else None) as per_photo:
        for name in args.model:
            model = registry.get(name)
            photos, unlabelled = labelled_photos(Path(args.source), model.spec.labels)
            if not photos:
                raise UsageError(
                    f"no photos in {args.source} carry a label {name} knows (ImageNet: a synset id in the "
                    "file or folder name; a bundle: a sub-folder named like one of its classes)"
                )
            if unlabelled:
                print(
                    f"imagenet-zoo: {len(unlabelled)} photos have no label for {name}; left out",
                    file=sys.stderr,
                )
            if not model.weights_available:
                rows.append({"model": name, "error": f"weights missing: imagenet-zoo weights fetch {name}"})
                continue
            classifier = load(
                name,
                engine=args.engine,
                precision=args.precision,
                batch_size=args.batch_size,
                workers=args.workers,
            )
            accuracy = evaluate_model(
                classifier, photos, engine=args.engine, precision=args.precision, on_result=per_photo.write
            )
            rows.append(output.accuracy_dict(accuracy))
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(output.accuracy_table(rows))
    return 1 if any("error" in row for row in rows) else 0


class _EvalOutput:
    """Per-photo evaluation results, streamed to .jsonl or .csv (or nowhere)."""

    _FIELDS = (
        "model",
        "path",
        "label",
        "top1_index",
        "top1_label",
        "top1_score",
        "correct_top1",
        "correct_top5",
        "error_type",
    )

    def __init__(self, path: Path | None) -> None:
        if path and path.suffix.lower() not in (".jsonl", ".csv"):
            raise UsageError(f"--output must end in .jsonl or .csv: {path}")
        self.path = path

    def __enter__(self) -> _EvalOutput:
        try:
            self._file = self.path.open("w", encoding="utf-8", newline="") if self.path else None
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc}") from exc
        self._csv = csv.writer(self._file) if self._file and self.path.suffix.lower() == ".csv" else None  # type: ignore[union-attr]
        if self._csv:
            self._csv.writerow(self._FIELDS)
        return self

    def write(self, result: Classification, photo: LabelledPhoto) -> None:
        if self._file is None:
            return
        ranked = [p.index for p in result.predictions]
        top = result.predictions[0] if result.predictions else None
        row = {
            "model": result.model,
            "path": result.source,
            "label": photo.label,
            "top1_index": top.index if top else None,
            "top1_label": top.label if top else None,
            "top1_score": round(top.score, 6) if top else None,
            "correct_top1": bool(ranked) and ranked[0] == photo.label,
            "correct_top5": photo.label in ranked,
            "error_type": result.error.type if result.error else None,
        }
        if self._csv:
            self._csv.writerow(["" if row[k] is None else row[k] for k in self._FIELDS])
        else:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file:
            self._file.close()


def compare(args: argparse.Namespace) -> int:
    from imagenet_zoo.compare import compare as compare_models

    registry = default_registry()
    names = (
        [m.spec.name for m in registry] if args.models == "all" else [n for n in args.models.split(",") if n]
    )
    models = [registry.get(name) for name in names]
    photos = find_images(args.photos)
    statuses, comparisons = compare_models(
        photos, models, top=args.top, engine=args.engine, precision=args.precision
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

    if args.max_upload_mb <= 0 or args.deadline <= 0 or args.drain_seconds < 0:
        raise UsageError("--max-upload-mb and --deadline must be positive, --drain-seconds not negative")
    settings = Settings(
        models=tuple(dict.fromkeys(args.model)),
        engine=args.engine,
        precision=args.precision,
        max_upload_mb=args.max_upload_mb,
        max_queue=args.max_queue,
        deadline_s=args.deadline,
    )
    run_server(settings, host=args.host, port=args.port, drain_s=args.drain_seconds)
    return 0


def extract(args: argparse.Namespace) -> int:
    from imagenet_zoo.features import FORMATS, extract_features, save_features

    if args.cluster:
        return _on_cluster(args, "extract")
    output_path = Path(args.output)
    if output_path.suffix.lower() not in FORMATS:
        raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {output_path}")
    sources = find_images(args.photos, recursive=args.recursive)
    if not sources:
        raise UsageError("no image files found (use --recursive for sub-folders)")
    extractor = load(
        args.model, engine=args.engine, precision=args.precision, batch_size=args.batch_size,
        workers=args.workers, features=True,
    )  # fmt: skip
    progress = Progress("Extracting", len(sources), unit="img", enabled=False if args.quiet else None)
    start = time.monotonic()
    feature_set, failures = extract_features(extractor, sources, on_item=lambda *_: progress.update())
    progress.close()
    save_features(feature_set, output_path)
    shape = "x".join(map(str, feature_set.features.shape))
    print(
        f"imagenet-zoo: {shape} features from {feature_set.model} written to {output_path}", file=sys.stderr
    )
    _summarize(len(sources), 0, failures, time.monotonic() - start, output_path, verb="extracted features of")
    return 1 if failures else 0


def _on_cluster(args: argparse.Namespace, task: Task, **options: Any) -> int:
    """The same job on Ray: partitions in the --output folder; a rerun continues where one stopped."""
    if not args.output:
        raise UsageError("--cluster writes partition files into a folder: give it with --output DIR")
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
        partition_format=args.partition_format,
        max_actors=args.max_actors,
        progress=not args.quiet and sys.stderr.isatty(),
        **options,
    )
    start = time.monotonic()
    report = run_job(job)
    verb = "classified" if task == "classify" else "extracted features of"
    elapsed = time.monotonic() - start
    _summarize(report.written, report.skipped, report.failures, elapsed, args.output, verb=verb)
    return 1 if report.failures else 0


def train(args: argparse.Namespace) -> int:
    from imagenet_zoo.training import TrainConfig, confusion_text
    from imagenet_zoo.training import train as train_bundle

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
    )
    report = train_bundle(
        Path(args.source), Path(args.output), config, log=lambda line: print(line, flush=True)
    )
    for path in report.skipped:
        print(f"imagenet-zoo: skipped unreadable photo {path}", file=sys.stderr)
    print(
        f"validation: accuracy {report.accuracy:.1%}, balanced accuracy {report.balanced_accuracy:.1%} "
        f"on {report.val_size} photos\n{confusion_text(report.confusion, report.classes)}\n"
        f"bundle: {report.bundle} (use it as --model {report.bundle})"
    )
    return 0

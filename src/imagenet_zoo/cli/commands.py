"""What each subcommand does; output formatting lives in `cli/output.py`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imagenet_zoo.annotate import annotate
from imagenet_zoo.api import load
from imagenet_zoo.classifier import Classification
from imagenet_zoo.cli import output
from imagenet_zoo.errors import UsageError
from imagenet_zoo.images import decode_image, find_images
from imagenet_zoo.registry import default_registry


def classify(args: argparse.Namespace) -> int:
    sources = find_images(args.photos)
    if not sources:
        raise UsageError("no image files found in the given folders")
    classifier = load(
        args.model,
        engine=args.engine,
        precision=args.precision,
        resize=args.resize,
        batch_size=args.batch_size,
    )
    results = classifier.classify_many(sources, top=args.top)
    if args.format == "json":
        json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(output.results_table(results))
    sys.stdout.flush()  # results are out before annotation, which may still fail on a bad OUT path
    if args.annotate:
        write_annotations(results, Path(args.annotate))
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"imagenet-zoo: {failed} of {len(results)} inputs could not be classified", file=sys.stderr)
    return 1 if failed else 0


def write_annotations(results: list[Classification], out: Path) -> None:
    """One labelled image per classified input: `out` itself for a single input, else files in it."""
    single = len(results) == 1
    if not single:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the annotation folder {out}: {exc}") from exc
    used: set[str] = set()
    for result in results:
        if not result.ok:
            continue
        image = annotate(decode_image(result.source).image, result.top)
        target = out if single else out / _unique_name(Path(result.source).stem, used)
        target = target if target.suffix else target.with_suffix(".jpg")
        try:
            image.save(target)
        except (ValueError, OSError) as exc:  # unknown extension, missing folder, no permission
            raise UsageError(f"cannot write the annotated image {target}: {exc}") from exc


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = f"{stem}.jpg", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.jpg"
    used.add(name)
    return name


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
    return 0

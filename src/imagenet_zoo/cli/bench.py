"""`imagenet-zoo bench`: images/s and latency of each engine and precision, as ratios to Keras `predict`
measured in the same run, and end to end over a folder of photos."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from imagenet_zoo.cli import options
from imagenet_zoo.engines.registry import engine_registry, engine_summaries, get_engine
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.bench import Row

NAME = "bench"
HELP = "images/s and latency per engine, as ratios to Keras predict"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    registry = engine_registry()
    options.add_list_option(
        parser,
        "--model",
        ["resnet50"],
        type=options.model_name,
        metavar="M",
        help="models to measure (default resnet50)",
    )
    options.add_list_option(
        parser,
        "--engine",
        registry.installed(),
        choices=registry.names(),
        metavar="E",
        help="engines to measure (default: all installed): " + engine_summaries(),
    )
    options.add_list_option(
        parser,
        "--precision",
        ["fp32"],
        choices=registry.precisions(),
        metavar="P",
        help="precisions to measure, where engines have them (fp32)",
    )
    options.add_load_options(parser, "device")
    options.add_list_option(
        parser, "--batch-size", [1], type=options.batch_size, metavar="B", help="batch sizes (default 1)"
    )
    parser.add_argument(
        "--seconds", type=options.finite, default=5.0, help="timed seconds per configuration (default 5)"
    )
    parser.add_argument(
        "--calibration", metavar="DIR", help="photos to calibrate with when int8 is not made yet"
    )
    parser.add_argument(
        "--end-to-end", metavar="DIR", help="decode + preprocess + infer over the photos in DIR"
    )
    parser.add_argument(
        "--no-cold-start", action="store_true", help="skip timing a cold `classify` per engine"
    )
    options.add_format_option(parser, "table", "json", "markdown")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from imagenet_zoo.jobs import bench as benchmark

    if not args.seconds > 0:
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
        device=args.device,
    )
    sgemm = benchmark.measure_sgemm_gflops()
    env = benchmark.environment(sgemm)
    live = args.format == "table"
    if live:
        print(bench_preamble(env))
        print(bench_header())
    rows = benchmark.run_plan(
        plan, sgemm, report=lambda row: print(bench_row(row), flush=True) if live else None
    )
    if args.format == "json":
        json.dump([bench_dict(row) for row in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "markdown":
        sys.stdout.write(bench_markdown(env, rows))
    else:
        sys.stdout.write(bench_end_to_end_notes(rows))
    return 0


_BENCH_COLUMNS = (
    ("model", "{:<18}"),
    ("engine", "{:<13}"),
    ("prec", "{:<5}"),
    ("weights", "{:<10}"),
    ("batch", "{:>5}"),
    ("img/s", "{:>8}"),
    ("p50 ms", "{:>8}"),
    ("p95 ms", "{:>8}"),
    ("GFLOP/img", "{:>9}"),
    ("of fp32 peak", "{:>12}"),
    ("x keras.predict", "{:>15}"),
    ("peak MB", "{:>8}"),
    ("cold s", "{:>7}"),
)


def _bench_cells(row: Row) -> list[str]:
    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None or value != value else format(value, fmt)  # NaN: not measured

    return [
        row.model,
        row.engine if row.mode == "inference" else f"{row.engine} e2e",
        row.precision,
        row.weights,
        str(row.batch_size),
        number(row.images_per_second, ".1f"),
        number(row.latency_ms_p50, ".1f"),
        number(row.latency_ms_p95, ".1f"),
        number(row.gflops_per_image, ".2f"),
        number(row.fraction_of_fp32_peak, ".0%"),
        number(row.ratio_to_keras, ".2f"),
        f"{row.peak_memory_mb:.0f}" + ("*" if row.converted_in_run else ""),
        number(row.cold_start_s, ".2f"),
    ]


def bench_preamble(env: dict[str, Any]) -> str:
    from imagenet_zoo.jobs import bench as benchmark

    return (
        f"imagenet-zoo bench, {env['date']}: {env['cpu']}, {env['cores']} cores, OpenVINO {env['openvino']}; "
        f"fp32 sgemm {env['fp32_sgemm_gflops']} GFLOP/s\n"
        "peak MB: the worker process's peak resident memory (* includes converting the model this run)"
        + (
            ""
            if benchmark.baseline_installed()
            else f"\nno {benchmark.BASELINE} baseline: it runs Keras on TensorFlow "
            f"({get_engine(benchmark.BASELINE_ENGINE).how_to_install})"
        )
    )


def bench_header() -> str:
    return " ".join(fmt.format(name) for name, fmt in _BENCH_COLUMNS)


def bench_row(row: Row) -> str:
    return " ".join(
        fmt.format(cell) for (_, fmt), cell in zip(_BENCH_COLUMNS, _bench_cells(row), strict=True)
    )


def bench_dict(row: Row) -> dict[str, Any]:
    data = asdict(row)
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in data.items()}  # NaN -> null


def bench_markdown(env: dict[str, Any], rows: list[Row]) -> str:
    names = [name for name, _ in _BENCH_COLUMNS]
    lines = [
        bench_preamble(env).replace("\n", "  \n"),
        "",
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---" for _ in names) + "|",
        *("| " + " | ".join(_bench_cells(row)) + " |" for row in rows),
    ]
    notes = bench_end_to_end_notes(rows)
    return "\n".join(lines) + "\n" + (f"\n{notes}" if notes else "")


def bench_end_to_end_notes(rows: list[Row]) -> str:
    """What bounds each end-to-end run, and how close the in-process and whole-process jobs come."""
    lines = []
    for row in rows:
        if row.mode != "end_to_end":
            continue
        x = row.extra
        line = (
            f"{row.model} {row.engine} {row.precision} batch {row.batch_size}, {x['files']} files of "
            f"{x['median_megapixels']} MP (median): decode + preprocess {x['decode_ms_per_image']} ms/photo "
            f"on one core (the decode alone: {x['decode_alone_ms_per_image']}; full decode + preprocess: "
            f"{x['decode_full_ms_per_image']}), "
            f"inference {x['inference_ms_per_image']} ms/photo; "
            f"bound {x['bound_images_per_second']} photos/s; "
            f"in process {row.images_per_second:.1f}/s ({x['fraction_of_bound']:.0%} of bound)"
        )
        if "process_images_per_second" in x:
            line += (
                f"; whole `classify` process {x['process_images_per_second']}/s "
                f"({x['process_fraction_of_bound']:.0%} of bound)"
            )
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")

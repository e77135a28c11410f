"""Human-readable tables for the CLI."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from imagenet_zoo.classifier import Classification
from imagenet_zoo.explain import Explanation
from imagenet_zoo.jobs.bench import Row
from imagenet_zoo.jobs.compare import ModelStatus, PhotoComparison
from imagenet_zoo.jobs.evaluate import Accuracy
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.selftest import Check
from imagenet_zoo.specs import PREPROCESS_MODES


def printable(text: str) -> str:
    """Text from outside (file names, labels, messages) made safe for a terminal: control and format
    characters (escape sequences, bidi overrides, new lines) are shown as escapes, never interpreted."""
    return "".join(
        c if unicodedata.category(c) not in ("Cc", "Cf") else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


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


def groups_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'synset':<10} {'depth':>5} {'classes':>7}  lemmas"]
    lines += [
        f"{r['synset']:<10} {r['depth']:>5} {r['classes']:>7}  {printable(', '.join(r['lemmas']))}"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def model_rows(models: Iterable[RegisteredModel]) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        spec = model.spec
        rows.append(
            {
                "name": spec.name,
                "aliases": list(spec.aliases),
                "input_size": spec.data_config.input_size,
                "preprocessing": spec.data_config.describe(),
                "params": spec.num_params,
                "weights_bytes": spec.weights.size,
                "top1": spec.accuracy.top1,
                "top5": spec.accuracy.top5,
                "weights_present": model.weights.is_present(spec),
                "license": spec.license,
            }
        )
    return rows


def models_table(rows: list[dict[str, Any]]) -> str:
    header = ("model", "input", "preprocessing", "params", "weights", "top-1", "top-5", "cached")
    body = [
        (
            row["name"],
            f"{row['input_size']}x{row['input_size']}",
            row["preprocessing"],
            f"{row['params'] / 1e6:.1f}M",
            f"{row['weights_bytes'] / 2**20:.0f} MiB",
            f"{row['top1']:.1f}",
            "-" if row["top5"] is None else f"{row['top5']:.1f}",
            "yes" if row["weights_present"] else "no",
        )
        for row in rows
    ]
    widths = [max(len(str(r[i])) for r in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *body)
    ]
    legend = "; ".join(f"{mode} = {text}" for mode, text in PREPROCESS_MODES.items())
    return "\n".join([*lines, "", f"preprocessing modes: {legend}", ""])


_SELFTEST_FORMAT = "{:<20} {:<9} {:<9} {:<17} {:>11} {:>6} {:>6}  {}"


def selftest_header() -> str:
    return _SELFTEST_FORMAT.format(
        "model", "engine", "precision", "compared with", "max |dp|", "top-1", "top-5", "result"
    )


def selftest_row(check: Check) -> str:
    return _SELFTEST_FORMAT.format(
        check.model,
        check.engine,
        check.precision,
        check.reference,
        f"{check.max_abs_diff:.2e}",
        "same" if check.top1_match else "DIFF",
        "same" if check.top5_match else "diff",
        "PASS" if check.passed else "FAIL",
    )


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
    return (
        f"imagenet-zoo bench, {env['date']}: {env['cpu']}, {env['cores']} cores, OpenVINO {env['openvino']}; "
        f"fp32 sgemm {env['fp32_sgemm_gflops']} GFLOP/s\n"
        "peak MB: the worker process's peak resident memory (* includes converting the model this run)"
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


def accuracy_dict(accuracy: Accuracy) -> dict[str, Any]:
    row = {
        "model": accuracy.model,
        "engine": accuracy.engine,
        "precision": accuracy.precision,
        "n": accuracy.n,
        "top1": round(accuracy.top1, 4),
        "top5": round(accuracy.top5, 4),
        "failed": accuracy.failed,
        "seconds": round(accuracy.seconds, 2),
        "images_per_second": round(accuracy.images_per_second, 1),
    }
    group = accuracy.group
    if group is not None:
        row["group"] = {
            "name": group.name, "synset": group.synset, "precision": round(group.precision, 4),
            "recall": round(group.recall, 4), "balanced_accuracy": round(group.balanced_accuracy, 4),
            "true_positives": group.true_positives, "false_positives": group.false_positives,
            "true_negatives": group.true_negatives, "false_negatives": group.false_negatives,
        }  # fmt: skip
    return row


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    header = ("model", "engine", "prec", "n", "top-1", "top-5", "failed", "img/s")
    lines = ["{:<20} {:<9} {:<5} {:>6} {:>7} {:>7} {:>6} {:>7}".format(*header)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['model']:<20} {row['error']}")
        else:
            lines.append(
                f"{row['model']:<20} {row['engine']:<9} {row['precision']:<5} {row['n']:>6} "
                f"{row['top1']:>7.1%} {row['top5']:>7.1%} {row['failed']:>6} {row['images_per_second']:>7.1f}"
            )
            if "group" in row:
                g = row["group"]
                lines.append(
                    f"  group {g['name']} ({g['synset']}, score >= 50%): precision {g['precision']:.1%}, "
                    f"recall {g['recall']:.1%}, balanced accuracy {g['balanced_accuracy']:.1%} "
                    f"({g['true_positives']} of {g['true_positives'] + g['false_negatives']} found, "
                    f"{g['false_positives']} false alarms)"
                )
    return "\n".join(lines) + "\n"


def comparison_table(statuses: list[ModelStatus], comparisons: list[PhotoComparison]) -> str:
    lines: list[str] = []
    for comparison in comparisons:
        lines.append(printable(comparison.path))
        for answer in comparison.answers:
            result = answer.result
            model = printable(result.model)
            if result.error is not None:
                lines.append(f"  {model:<20} ERROR {result.error.type}: {printable(result.error.message)}")
                continue
            ranked = "  ".join(f"{printable(p.label)} {p.score:.1%}" for p in result.predictions)
            lines.append(f"  {model:<20} {answer.latency_ms:8.1f} ms  {ranked}")
        for status in statuses:
            if not status.ready:
                lines.append(f"  {status.name:<20} weights missing: {status.fetch_command}")
        agreement = comparison.agreement()
        if agreement["label"] is not None:
            verdict = "all agree" if agreement["all_agree"] else "majority"
            lines.append(
                f"  {verdict}: {printable(agreement['label'])} ({printable(', '.join(agreement['models']))})"
            )
        lines.append("")
    return "\n".join(lines)


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
            f"on one core (full decode: {x['decode_full_ms_per_image']}), "
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

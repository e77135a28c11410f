"""`imagenet-zoo quantize MODEL --calibration DIR`: make an engine's calibrated precision (OpenVINO's
int8, by NNCF) from the user's photos, cached where `--precision` finds it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagenet_zoo.api import resolve_model
from imagenet_zoo.cli.options import model_name, positive
from imagenet_zoo.engines.registry import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_ENGINE,
    engine_registry,
    get_engine,
)
from imagenet_zoo.errors import UsageError

NAME = "quantize"
HELP = "int8-quantize a model for --precision int8 (NNCF)"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("model", type=model_name, metavar="MODEL", help="a zoo model or a bundle folder")
    parser.add_argument(
        "--calibration", required=True, metavar="DIR", help="a folder of representative photos"
    )
    parser.add_argument(
        "--samples",
        type=positive,
        default=DEFAULT_CALIBRATION_SAMPLES,
        help=f"calibration photos to use (default {DEFAULT_CALIBRATION_SAMPLES})",
    )
    calibrated = [spec for spec in engine_registry() if spec.calibration is not None]
    parser.add_argument(
        "--engine",
        choices=[spec.name for spec in calibrated],
        default=DEFAULT_ENGINE,
        help="the engine whose precision to make (default openvino)",
    )
    parser.add_argument(
        "--precision",
        choices=sorted({p for spec in calibrated for p in spec.calibrated_precisions}),
        default="int8",
        help="the precision to make (default int8)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    engine = get_engine(args.engine)
    if engine.calibration is None or args.precision not in engine.calibrated_precisions:
        raise UsageError(f"the {engine.name} engine makes no {args.precision} model from photos")
    report = engine.calibration.run(
        resolve_model(args.model),
        args.precision,
        Path(args.calibration),
        samples=args.samples,
        random_weights=False,
    )
    for path in report.skipped:
        print(f"imagenet-zoo: skipped unreadable calibration file {path}", file=sys.stderr)
    print(f"{report.model}: {args.precision} model calibrated on {report.samples} photos: {report.path}")
    return 0

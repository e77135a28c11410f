"""`imagenet-zoo export MODEL --format onnx|openvino --output DIR`: a model as a file ONNX Runtime,
OpenVINO or Triton reads, uint8 pixels in and probabilities out, with a `model.json` saying how to feed it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from imagenet_zoo.api import resolve_model
from imagenet_zoo.cli.options import model_name
from imagenet_zoo.export import FORMATS, PRECISIONS, check_export, export

NAME = "export"
HELP = "write a model for ONNX Runtime, OpenVINO or Triton (uint8 pixels in, probabilities out)"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("model", type=model_name, metavar="MODEL", help="a zoo model or a bundle folder")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx or openvino (an IR)")
    parser.add_argument("--output", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default) or int8 (OpenVINO, once `imagenet-zoo quantize` made it)",
    )
    parser.add_argument(
        "--triton",
        action="store_true",
        help="write a Triton model repository: DIR/MODEL/config.pbtxt and DIR/MODEL/1/the model",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into DIR even if it holds files (only the exported ones)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_export(args.format, args.precision)
    report = export(
        resolve_model(args.model),
        args.format,
        Path(args.output),
        precision=args.precision,
        triton=args.triton,
        overwrite=args.overwrite,
    )
    for path in report.files:
        print(path)
    return 0

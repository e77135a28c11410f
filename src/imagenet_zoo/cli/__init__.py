"""The `imagenet-zoo` command line. Exit codes: 0 all done, 1 some input or weights failed, 2 usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from imagenet_zoo.api import DEFAULT_ENGINE, ENGINES
from imagenet_zoo.bundles import is_bundle
from imagenet_zoo.cli import commands
from imagenet_zoo.engines.openvino import PRECISIONS
from imagenet_zoo.errors import ImagenetZooError, UsageError
from imagenet_zoo.registry import default_registry

NUM_CLASSES = 1000


def _model_name(value: str) -> str:
    """A zoo model's canonical name, or a bundle's folder as given (other processes resolve it too)."""
    try:
        name = default_registry().get(value).spec.name
    except ImagenetZooError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value if is_bundle(value) else name


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return int(value)


def _top_k(value: str) -> int:
    k = _positive(value)
    if k > NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"there are only {NUM_CLASSES} classes, got {k}")
    return k


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="openvino (default, fast; converted once from Keras and cached) or keras (the reference)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="openvino only: fp32 (default), bf16 (CPUs with bf16), int8 (after `imagenet-zoo quantize`)",
    )


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("on a Ray cluster (pip install 'imagenet-zoo[ray]')")
    group.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on Ray: local (start one here), auto (the running cluster) or a Ray address; --output is "
        "then a folder of partitions, and a rerun skips the photos already in it",
    )
    group.add_argument("--partition-format", choices=("jsonl", "parquet"), default="jsonl")
    group.add_argument(
        "--max-actors", type=_positive, metavar="N", help="model actors at most (default: one per CPU)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagenet-zoo", description="Classify photos with ImageNet CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    classify = sub.add_parser("classify", help="top-k ImageNet labels for photos, folders or globs")
    classify.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    classify.add_argument("--recursive", action="store_true", help="also classify photos in sub-folders")
    classify.add_argument(
        "--output",
        metavar="FILE",
        help="stream results to FILE (.csv, .jsonl or .json; a folder with --cluster)",
    )
    classify.add_argument("--resume", action="store_true", help="skip photos already in --output")
    classify.add_argument("--quiet", action="store_true", help="no progress bar")
    classify.add_argument("--workers", type=_positive, help="decoding threads (default: one per core)")
    classify.add_argument("--model", type=_model_name, default="efficientnet_lite0")
    classify.add_argument("--top", type=_top_k, default=5, help="how many labels per photo (default 5)")
    classify.add_argument("--format", choices=("table", "json"), default="table")
    classify.add_argument(
        "--annotate", metavar="OUT", help="write labelled images: a file for one photo, else a folder"
    )
    classify.add_argument(
        "--annotate-dir", metavar="DIR", help="write a labelled copy of every photo into DIR"
    )
    classify.add_argument(
        "--sheet", metavar="FILE", help="write a contact sheet of labelled thumbnails to FILE"
    )
    classify.add_argument(
        "--resize",
        choices=("crop", "squash"),
        default="crop",
        help="crop: shorter side + centre crop (standard); squash: whole photo to the input size",
    )
    classify.add_argument("--batch-size", type=_positive, default=8)
    _add_engine_options(classify)
    _add_cluster_options(classify)
    classify.set_defaults(run=commands.classify)

    extract = sub.add_parser("extract", help="pooled ImageNet features of photos, for transfer learning")
    extract.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    extract.add_argument("--model", type=_model_name, default="efficientnet_lite0")
    extract.add_argument(
        "--output",
        required=True,
        metavar="FILE",
        help="features.npz or features.parquet (a folder with --cluster)",
    )
    extract.add_argument(
        "--layer",
        choices=("pooled",),
        default="pooled",
        help="pooled: global-average-pooled penultimate features (Keras include_top=False)",
    )
    extract.add_argument("--recursive", action="store_true")
    extract.add_argument("--batch-size", type=_positive, default=16)
    extract.add_argument("--workers", type=_positive)
    extract.add_argument("--quiet", action="store_true")
    _add_engine_options(extract)
    _add_cluster_options(extract)
    extract.set_defaults(run=commands.extract)

    train = sub.add_parser(
        "train", help="a classifier for your own classes on an ImageNet network (a bundle)"
    )
    train.add_argument("source", metavar="DIR", help="one sub-folder of photos per class")
    train.add_argument("--base", type=_model_name, default="efficientnet_lite0", help="the ImageNet network")
    train.add_argument("--output", required=True, metavar="BUNDLE_DIR", help="where the bundle is written")
    train.add_argument("--epochs", type=_positive, default=30)
    train.add_argument(
        "--fine-tune-layers",
        type=int,
        default=0,
        metavar="N",
        help="after the head, also train the base's last N layers (default 0: head only)",
    )
    train.add_argument(
        "--val-split", type=float, default=0.2, help="share of each class held out (default 0.2)"
    )
    train.add_argument("--augment", action="store_true", help="mirrored copies; random flips and shifts")
    train.add_argument(
        "--head",
        choices=("linear", "neighbours"),
        default="linear",
        help="linear: a trained dense layer; neighbours: a vote of the most similar training photos, "
        "better with few photos per class or classes of many kinds",
    )
    train.add_argument("--batch-size", type=_positive, default=32)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--arch", type=_model_name, help="with --from-scratch: the architecture, e.g. squeezenet1_1"
    )
    train.add_argument(
        "--from-scratch", action="store_true", help="random initial weights, no ImageNet features"
    )
    train.add_argument(
        "--resume", action="store_true", help="with --from-scratch: continue from the checkpoint"
    )
    train.add_argument(
        "--learning-rate", type=float, default=1e-3, help="from scratch: start of a cosine decay"
    )
    train.set_defaults(run=commands.train)

    evaluate = sub.add_parser("eval", help="top-1/top-5 accuracy on labelled photos (synset names or CSV)")
    evaluate.add_argument(
        "source", metavar="DIR_OR_CSV", help="labelled photos: a folder, or a CSV of path,label"
    )
    evaluate.add_argument("--model", nargs="+", type=_model_name, default=["efficientnet_lite0"], metavar="M")
    evaluate.add_argument("--format", choices=("table", "json"), default="table")
    evaluate.add_argument("--output", metavar="FILE", help="per-photo results (.jsonl or .csv)")
    evaluate.add_argument("--batch-size", type=_positive, default=16)
    evaluate.add_argument("--workers", type=_positive, help="decoding threads (default: one per core)")
    _add_engine_options(evaluate)
    evaluate.set_defaults(run=commands.evaluate)

    compare = sub.add_parser("compare", help="several models on the same photos, side by side")
    compare.add_argument("photos", nargs="+", metavar="PHOTO")
    compare.add_argument("--models", default="all", help="all (default) or a comma-separated list")
    compare.add_argument("--top", type=_top_k, default=3)
    compare.add_argument("--format", choices=("table", "json"), default="table")
    _add_engine_options(compare)
    compare.set_defaults(run=commands.compare)

    serve = sub.add_parser("serve", help="the HTTP service and its web page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--model",
        nargs="+",
        type=_model_name,
        default=["efficientnet_lite0"],
        metavar="M",
        help="models to serve; the first is the default, loaded before the service is ready",
    )
    serve.add_argument("--max-upload-mb", type=float, default=20.0)
    serve.add_argument(
        "--max-queue", type=_positive, default=32, help="requests waiting for inference before 503"
    )
    serve.add_argument("--deadline", type=float, default=30.0, help="seconds before a request answers 504")
    serve.add_argument(
        "--drain-seconds", type=float, default=5.0, help="on SIGTERM: not-ready this long, then stop"
    )
    _add_engine_options(serve)
    serve.set_defaults(run=commands.serve)

    quantize = sub.add_parser("quantize", help="int8-quantize a model for --precision int8 (NNCF)")
    quantize.add_argument("model", type=_model_name, metavar="MODEL")
    quantize.add_argument(
        "--calibration", required=True, metavar="DIR", help="a folder of representative photos"
    )
    quantize.add_argument(
        "--samples", type=_positive, default=300, help="calibration photos to use (default 300)"
    )
    quantize.set_defaults(run=commands.quantize)

    selftest = sub.add_parser("selftest", help="check every engine and precision on this machine")
    selftest.set_defaults(run=commands.selftest)

    bench = sub.add_parser("bench", help="images/s and latency per engine, as ratios to Keras predict")
    bench.add_argument("--model", nargs="+", type=_model_name, default=["resnet50"], metavar="M")
    bench.add_argument("--engine", nargs="+", choices=ENGINES, default=list(ENGINES), metavar="E")
    bench.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"], metavar="P")
    bench.add_argument("--batch-size", nargs="+", type=_positive, default=[1], metavar="B")
    bench.add_argument(
        "--seconds", type=float, default=5.0, help="timed seconds per configuration (default 5)"
    )
    bench.add_argument("--calibration", metavar="DIR", help="photos to quantize with when int8 is not cached")
    bench.add_argument(
        "--end-to-end", metavar="DIR", help="decode + preprocess + infer over the photos in DIR"
    )
    bench.add_argument(
        "--no-cold-start", action="store_true", help="skip timing a cold `classify` per engine"
    )
    bench.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    bench.set_defaults(run=commands.bench)

    models = sub.add_parser("models", help="every model, its input, size, accuracy and cached weights")
    models.add_argument("--format", choices=("table", "json"), default="table")
    models.set_defaults(run=commands.models)

    weights = sub.add_parser("weights", help="fetch, verify, locate or import weights files")
    weights.add_argument("action", choices=("fetch", "verify", "path", "import"))
    weights.add_argument("model", type=_model_name, metavar="NAME")
    weights.add_argument("file", nargs="?", metavar="FILE", help="with import: the file obtained elsewhere")
    weights.add_argument(
        "--notop", action="store_true", help="the feature-extractor file (include_top=False)"
    )
    weights.set_defaults(run=commands.weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as exc:
        parser.error(str(exc))  # exits with 2
    except ImagenetZooError as exc:
        print(f"imagenet-zoo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

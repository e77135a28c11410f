"""The `imagenet-zoo` command line. Exit codes: 0 all done, 1 some input or weights failed, 2 usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from imagenet_zoo.api import DEFAULT_ENGINE, ENGINES, resolve_model
from imagenet_zoo.cli import commands
from imagenet_zoo.data.images import DECODE_MODES
from imagenet_zoo.engines.openvino import PRECISIONS
from imagenet_zoo.errors import ImagenetZooError, UsageError
from imagenet_zoo.registry import DEFAULT_MODEL

NUM_CLASSES = 1000
_GIVEN = "_options_given"  # which single-valued options a command line has set (removed after parsing)


class _StoreOnce(argparse.Action):
    """A single-valued option given twice is an error, not a silent "the last one wins"."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        given = vars(namespace).setdefault(_GIVEN, set())
        if self.dest in given:
            parser.error(f"{option_string} was given twice; it takes one value here")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class _Accumulate(argparse.Action):
    """A list option adds up over repeats (`--precision fp32 --precision int8` is both); the first one
    given replaces the default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        current = getattr(namespace, self.dest)
        given = [item for value in values for item in (value if isinstance(value, list) else [value])]
        items = given if current is self.default else [*current, *given]
        setattr(namespace, self.dest, list(dict.fromkeys(items)))


class _Parser(argparse.ArgumentParser):
    """argparse with `_StoreOnce` as the plain option action, for every sub-command too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)


def _model_name(value: str) -> str:
    """A zoo model's canonical name, or a bundle's path (other processes resolve it the same way)."""
    try:
        return resolve_model(value).spec.name
    except ImagenetZooError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _add_decode_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode",
        choices=DECODE_MODES,
        default="fast",
        help="fast (default): decode large JPEGs only at the resolution the model needs; full: every pixel, "
        "the exact ImageNet evaluation protocol",
    )


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=_model_name,
        default=DEFAULT_MODEL,
        help=f"a zoo model (see `imagenet-zoo models`) or a bundle folder (default {DEFAULT_MODEL})",
    )


def _add_folder_options(parser: argparse.ArgumentParser, *, batch_size: int) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    parser.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=batch_size,
        help=f"photos per engine call (default {batch_size})",
    )
    parser.add_argument("--workers", type=_positive, help="decoding threads (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("on a Ray cluster (pip install 'imagenet-zoo[ray]')")
    group.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on Ray: local (start one here), auto (the running cluster) or a Ray address; --output is "
        "then a folder of partitions, and a rerun skips the photos already in it",
    )
    group.add_argument(
        "--partition-format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="partition files (default jsonl)",
    )
    group.add_argument(
        "--max-actors", type=_positive, metavar="N", help="model actors at most (default: one per CPU)"
    )
    group.add_argument(
        "--stall-timeout", type=float, default=300.0, metavar="SECONDS",
        help="stop the job if no partition is written for this long (default 300); a rerun resumes",
    )  # fmt: skip


def _add_format_option(parser: argparse.ArgumentParser, *formats: str) -> None:
    parser.add_argument(
        "--format", choices=formats, default=formats[0], help=f"output on stdout (default {formats[0]})"
    )


def _add_list_option(parser: argparse.ArgumentParser, flag: str, default: list[Any], **kwargs: Any) -> None:
    """An option that takes several values, given at once or by repeating the flag."""
    parser.add_argument(flag, nargs="+", action=_Accumulate, default=default, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imagenet-zoo", description="Classify photos with ImageNet CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    classify = sub.add_parser("classify", help="top-k ImageNet labels for photos, folders or globs")
    _add_folder_options(classify, batch_size=8)
    classify.add_argument(
        "--output",
        metavar="FILE",
        help="stream results to FILE (.csv, .jsonl or .json; a folder with --cluster)",
    )
    classify.add_argument("--resume", action="store_true", help="skip photos already in --output")
    classify.add_argument(
        "--verbose", action="store_true", help="also show what the decoder warned about each photo"
    )
    _add_list_option(classify, "--groups", [], type=_words, metavar="WORD[,WORD...]",
                     help="also the probability of WordNet groups: dog,bird (see `groups`)")  # fmt: skip
    classify.add_argument(
        "--top-groups", type=_positive, metavar="K", help="also the K most likely groups at --group-depth"
    )
    classify.add_argument(
        "--group-depth", type=int, default=6, metavar="D",
        help="is-a steps below 'entity' for --top-groups (default 6: animal, plant, container, ...)",
    )  # fmt: skip
    classify.add_argument(
        "--explain", action="store_true",
        help="also a heatmap of where the evidence for the top-1 class lies (drawn by --annotate/--sheet)",
    )  # fmt: skip
    classify.add_argument(
        "--explain-class", action=_StoreOnce, metavar="LABEL|INDEX",
        help="explain this class instead of the top-1 (an index, synset id or label; implies --explain)",
    )  # fmt: skip
    _add_model_option(classify)
    classify.add_argument("--top", type=_top_k, default=5, help="how many labels per photo (default 5)")
    _add_format_option(classify, "table", "json")
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
    _add_engine_options(classify)
    _add_decode_option(classify)
    _add_cluster_options(classify)
    classify.set_defaults(run=commands.classify)

    extract = sub.add_parser("extract", help="pooled ImageNet features of photos, for transfer learning")
    _add_folder_options(extract, batch_size=16)
    _add_model_option(extract)
    extract.add_argument(
        "--output",
        required=True,
        metavar="FILE",
        help="features.npz or features.parquet (a folder with --cluster)",
    )
    _add_engine_options(extract)
    _add_decode_option(extract)
    _add_cluster_options(extract)
    extract.set_defaults(run=commands.extract)

    train = sub.add_parser(
        "train", help="a classifier for your own classes on an ImageNet network (a bundle)"
    )
    train.add_argument("source", metavar="DIR", help="one sub-folder of photos per class")
    train.add_argument(
        "--base",
        type=_model_name,
        default=DEFAULT_MODEL,
        help=f"the ImageNet network (default {DEFAULT_MODEL})",
    )
    train.add_argument("--output", required=True, metavar="BUNDLE_DIR", help="where the bundle is written")
    train.add_argument("--epochs", type=_positive, default=30, help="at most this many (default 30)")
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
        choices=("auto", "linear", "neighbours"),
        default="auto",
        help="linear: a trained dense layer; neighbours: a vote of the most similar training photos "
        "(better with few photos per class, or classes of many kinds); auto (default): both, keeping the "
        "better on the held-out photos",
    )
    train.add_argument("--batch-size", type=_positive, default=32, help="photos per step (default 32)")
    train.add_argument("--seed", type=int, default=0, help="the split and initial weights (default 0)")
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
    _add_decode_option(train)
    train.set_defaults(run=commands.train)

    evaluate = sub.add_parser("eval", help="top-1/top-5 accuracy on labelled photos (synset names or CSV)")
    evaluate.add_argument(
        "source", metavar="DIR_OR_CSV", help="labelled photos: a folder, or a CSV of path,label"
    )
    _add_list_option(evaluate, "--model", [DEFAULT_MODEL], type=_model_name, metavar="M",
                     help=f"models to evaluate (default {DEFAULT_MODEL})")  # fmt: skip
    _add_format_option(evaluate, "table", "json")
    evaluate.add_argument("--output", metavar="FILE", help="per-photo results (.jsonl or .csv)")
    evaluate.add_argument(
        "--group", type=_word, metavar="WORD", help="also score a WordNet group as yes/no, e.g. dog"
    )
    evaluate.add_argument(
        "--batch-size", type=_positive, default=16, help="photos per engine call (default 16)"
    )
    evaluate.add_argument("--workers", type=_positive, help="decoding threads (default: one per core)")
    _add_engine_options(evaluate)
    _add_decode_option(evaluate)
    evaluate.set_defaults(run=commands.evaluate)

    compare = sub.add_parser("compare", help="several models on the same photos, side by side")
    compare.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    compare.add_argument(
        "--models", type=_model_list, action=_Accumulate, default=["all"], metavar="M[,M...]",
        help="all (default), or models separated by commas or given by repeating the flag",
    )  # fmt: skip
    compare.add_argument("--top", type=_top_k, default=3, help="labels per model and photo (default 3)")
    _add_format_option(compare, "table", "json")
    _add_engine_options(compare)
    _add_decode_option(compare)
    compare.set_defaults(run=commands.compare)

    serve = sub.add_parser("serve", help="the HTTP service and its web page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    _add_list_option(serve, "--model", [DEFAULT_MODEL], type=_model_name, metavar="M",
                     help="models to serve; the first is the default, loaded before ready")  # fmt: skip
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default 20)")
    serve.add_argument(
        "--max-queue", type=_positive, default=32, help="requests waiting for inference before 503"
    )
    serve.add_argument(
        "--max-upload-buffer-mb", type=float, default=256.0, help="MB of uploads read at once before 503"
    )
    serve.add_argument(
        "--max-megapixels", type=float, default=50.0, help="largest decoded image an upload may be (50)"
    )
    serve.add_argument("--deadline", type=float, default=30.0, help="seconds before a request answers 504")
    serve.add_argument("--access-log", action="store_true", help="log a line per request (default off)")
    serve.add_argument(
        "--api-key-file", metavar="FILE",
        help="require `Authorization: Bearer KEY` with a key from FILE (one per line); health stays open",
    )  # fmt: skip
    _add_list_option(serve, "--cors-origin", [], metavar="ORIGIN",
                     help="a browser origin allowed to call the API: https://app.example.org")  # fmt: skip
    serve.add_argument(
        "--max-batch-size", type=_positive, default=8,
        help="images one engine call may take from any requests (default 8; 1: no dynamic batching)",
    )  # fmt: skip
    serve.add_argument(
        "--max-batch-delay-ms", type=float, default=2.0,
        help="how long an image waits for others to share its engine call (default 2)",
    )  # fmt: skip
    serve.add_argument(
        "--drain-seconds", type=float, default=5.0, help="on SIGTERM: not-ready this long, then stop"
    )
    _add_engine_options(serve)
    _add_decode_option(serve)
    serve.set_defaults(run=commands.serve)

    quantize = sub.add_parser("quantize", help="int8-quantize a model for --precision int8 (NNCF)")
    quantize.add_argument("model", type=_model_name, metavar="MODEL", help="a zoo model or a bundle folder")
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
    _add_list_option(bench, "--model", ["resnet50"], type=_model_name, metavar="M",
                     help="models to measure (default resnet50)")  # fmt: skip
    _add_list_option(bench, "--engine", list(ENGINES), choices=ENGINES, metavar="E",
                     help="engines to measure (default both)")  # fmt: skip
    _add_list_option(bench, "--precision", ["fp32"], choices=PRECISIONS, metavar="P",
                     help="openvino precisions to measure (default fp32)")  # fmt: skip
    _add_list_option(bench, "--batch-size", [1], type=_positive, metavar="B", help="batch sizes (default 1)")
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
    _add_format_option(bench, "table", "json", "markdown")
    bench.set_defaults(run=commands.bench)

    groups = sub.add_parser("groups", help="WordNet groups of ImageNet classes (for classify --groups)")
    groups.add_argument("word", metavar="WORD", help="part of a group's name, or a synset id")
    _add_format_option(groups, "table", "json")
    groups.set_defaults(run=commands.groups)

    models = sub.add_parser("models", help="every model, its input, size, accuracy and cached weights")
    models.add_argument("pattern", nargs="?", help="only models whose name matches, e.g. 'resnet*'")
    _add_format_option(models, "table", "json")
    models.set_defaults(run=commands.models)

    weights = sub.add_parser("weights", help="fetch, verify, locate or import weights files")
    weights.add_argument(
        "action", choices=("fetch", "verify", "path", "import"), help="what to do with the model's weights"
    )
    weights.add_argument("model", type=_model_name, metavar="NAME", help="a zoo model")
    weights.add_argument("file", nargs="?", metavar="FILE", help="with import: the file obtained elsewhere")
    weights.add_argument(
        "--notop", action="store_true", help="the feature-extractor file (include_top=False)"
    )
    weights.set_defaults(run=commands.weights)
    return parser


def _words(value: str) -> list[str]:
    """`--groups dog,bird`: each checked now, so an unknown or ambiguous word is a usage error."""
    from imagenet_zoo.data.hierarchy import wordnet

    words = [word.strip() for word in value.split(",") if word.strip()]
    try:
        return [wordnet().group(word).id for word in words]
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _word(value: str) -> str:
    [synset] = _words(value)
    return synset


def _model_list(value: str) -> list[str]:
    """`--models a,b`: each one checked as `--model` is, or `all`."""
    names = [name for name in value.split(",") if name]
    return ["all"] if names == ["all"] else [_model_name(name) for name in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    vars(args).pop(_GIVEN, None)
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

"""`imagenet-zoo train DIR --output BUNDLE`: a classifier for the user's own classes on an ImageNet network
(a head on its features, optionally fine-tuning it), or an architecture from scratch: a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagenet_zoo.cli import options
from imagenet_zoo.cli.output import printable
from imagenet_zoo.errors import UsageError
from imagenet_zoo.registry import DEFAULT_MODEL
from imagenet_zoo.transfer.training import TrainConfig

NAME = "train"
HELP = "a classifier for your own classes on an ImageNet network (a bundle)"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("source", metavar="DIR", help="one sub-folder of photos per class")
    parser.add_argument(
        "--base",
        type=options.model_name,
        default=DEFAULT_MODEL,
        help=f"the ImageNet network (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--output", required=True, metavar="BUNDLE_DIR", help="where the bundle is written")
    parser.add_argument("--epochs", type=options.positive, default=30, help="at most this many (default 30)")
    parser.add_argument(
        "--fine-tune-layers",
        type=int,
        default=0,
        metavar="N",
        help="after the head, also train the base's last N layers (default 0: head only)",
    )
    parser.add_argument(
        "--val-split", type=options.finite, default=0.2, help="share of each class held out (default 0.2)"
    )
    parser.add_argument("--augment", action="store_true", help="mirrored copies; random flips and shifts")
    parser.add_argument(
        "--head",
        choices=("auto", "linear", "neighbours"),
        default="auto",
        help="linear: a trained dense layer; neighbours: a vote of the most similar training photos "
        "(better with few photos per class, or classes of many kinds); auto (default): both, keeping the "
        "better on the held-out photos",
    )
    parser.add_argument(
        "--batch-size", type=options.batch_size, default=32, help="photos per step (default 32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the split and initial weights (default 0)")
    parser.add_argument(
        "--arch", type=options.model_name, help="with --from-scratch: the architecture, e.g. squeezenet1_1"
    )
    parser.add_argument(
        "--from-scratch", action="store_true", help="random initial weights, no ImageNet features"
    )
    parser.add_argument(
        "--resume", action="store_true", help="with --from-scratch: continue from the checkpoint"
    )
    parser.add_argument(
        "--learning-rate",
        type=options.finite,
        default=TrainConfig.learning_rate,
        help=f"from scratch: start of a cosine decay (default {TrainConfig.learning_rate:g})",
    )
    options.add_load_options(parser, *options.ENGINE_OPTIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from imagenet_zoo.transfer.training import confusion_text, train

    if args.fine_tune_layers < 0:
        raise UsageError("--fine-tune-layers cannot be negative")
    if args.arch and not args.from_scratch:
        raise UsageError("--arch names the architecture to train --from-scratch; for transfer use --base")
    if args.from_scratch:
        options.refuse(
            args, ["engine", "precision", "device", "base"], "with --from-scratch: Keras trains it"
        )
    load = options.load_config(args, task="features", model=args.arch or args.base)
    config = TrainConfig(
        load=load,
        epochs=args.epochs,
        fine_tune_layers=args.fine_tune_layers,
        val_split=args.val_split,
        augment=args.augment,
        seed=args.seed,
        from_scratch=args.from_scratch,
        resume=args.resume,
        learning_rate=args.learning_rate,
        head=args.head,
    )
    report = train(Path(args.source), Path(args.output), config, log=lambda line: print(line, flush=True))
    for path in report.skipped:
        print(f"imagenet-zoo: skipped unreadable photo {printable(path)}", file=sys.stderr)
    if report.head_scores:
        scores = ", ".join(f"{name} {score:.1%}" for name, score in report.head_scores.items())
        print(f"kept the {report.head} head: the better balanced accuracy on the held-out photos ({scores})")
    shown = [printable(name) for name in report.classes]  # folder names: escape sequences stay escaped
    print(
        f"validation: accuracy {report.accuracy:.1%}, balanced accuracy {report.balanced_accuracy:.1%} "
        f"on {report.val_size} photos\n{confusion_text(report.confusion, shown)}\n"
        f"bundle: {report.bundle} (use it as --model {report.bundle})"
    )
    return 0

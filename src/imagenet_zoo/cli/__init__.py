"""The `imagenet-zoo` command line: one module per subcommand, each with its options next to the code that
runs them (as the `transformers` and `pip` commands are laid out); `options` holds what several share.
Exit codes: 0 all done, 1 some input or weights failed, 2 usage error."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from imagenet_zoo.cli import (
    bench,
    classify,
    compare,
    evaluate,
    export,
    extract,
    groups,
    models,
    quantize,
    selftest,
    serve,
    train,
    weights,
)
from imagenet_zoo.cli.options import Parser
from imagenet_zoo.errors import ImagenetZooError, MissingExtraError, UsageError

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the machine's state, not a bug: no traceback

COMMANDS = (
    classify,
    extract,
    train,
    evaluate,
    compare,
    serve,
    export,
    quantize,
    selftest,
    bench,
    groups,
    models,
    weights,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="imagenet-zoo", description="Classify photos with ImageNet CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except MissingExtraError as exc:  # the command line is right: no usage to show, only what to install
        print(f"imagenet-zoo: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        parser.error(str(exc))  # exits with 2
    except ImagenetZooError as exc:
        print(f"imagenet-zoo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in _FULL_DISK:
            raise
        # A write the command's own checks did not wrap (a feature file, an annotation): one line.
        print(f"imagenet-zoo: cannot write {exc.filename or 'a file'}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

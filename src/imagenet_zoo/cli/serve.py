"""`imagenet-zoo serve`: the HTTP service (`/v1`, the Open Inference Protocol's `/v2`) and its web page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagenet_zoo.cli import options
from imagenet_zoo.errors import UsageError

NAME = "serve"
HELP = "the HTTP service and its web page"


# The service's bounds in numbers, each positive: flag, default, what it bounds.
LIMITS = (
    ("--max-upload-mb", 20.0, "largest request body in MB"),
    ("--max-upload-buffer-mb", 256.0, "MB of uploads read at once before 503"),
    ("--max-megapixels", 50.0, "largest decoded image an upload may be"),
    ("--deadline", 30.0, "seconds before a request answers 504"),
    ("--body-timeout", 120.0, "seconds a request body may take to arrive (408)"),
    ("--body-idle-timeout", 15.0, "seconds a request body may pause between chunks (408)"),
)


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    options.add_models_option(parser, "models to serve; the first, the default, loads before ready")
    for flag, default, text in LIMITS:
        parser.add_argument(flag, type=options.finite, default=default, help=f"{text} (default {default:g})")
    parser.add_argument(
        "--max-queue",
        type=options.positive,
        help="requests waiting for inference before 503 (default 32, on a GPU 256)",
    )
    parser.add_argument("--access-log", action="store_true", help="log a line per request (default off)")
    parser.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="require `Authorization: Bearer KEY` with a key from FILE (one per line); health stays open",
    )
    options.add_list_option(
        parser,
        "--cors-origin",
        [],
        metavar="ORIGIN",
        help="a browser origin that may call the API: https://app.example.org",
    )
    parser.add_argument(
        "--max-batch-size",
        type=options.batch_size,
        help="images one engine call may take from any requests (default 8, on a GPU 64; 1: no dynamic "
        "batching)",
    )
    parser.add_argument(
        "--max-batch-files",
        type=options.positive,
        default=16,
        help="images one request may send (/v1/classify/batch, a v2 tensor; default 16)",
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=options.finite,
        default=2.0,
        help="how long an image waits for others to share its engine call (default 2)",
    )
    parser.add_argument(
        "--drain-seconds", type=options.finite, default=5.0, help="on SIGTERM: not-ready this long, then stop"
    )
    options.add_load_options(parser, *options.ENGINE_OPTIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from imagenet_zoo.server import Settings
    from imagenet_zoo.server.run import serve
    from imagenet_zoo.server.settings import read_api_keys

    limits = [flag for flag, _, _ in LIMITS]
    sizes = [getattr(args, flag.removeprefix("--").replace("-", "_")) for flag in limits]
    if not (all(size > 0 for size in sizes) and args.drain_seconds >= 0 and args.max_batch_delay_ms >= 0):
        raise UsageError(
            f"{', '.join(limits[:-1])} and {limits[-1]} must be positive, --drain-seconds and "
            "--max-batch-delay-ms not negative"
        )
    load = options.load_config(args, model=args.model[0], max_pixels=int(args.max_megapixels * 1e6))
    settings = Settings(
        models=tuple(dict.fromkeys(args.model)),
        load=load,
        max_upload_mb=args.max_upload_mb,
        max_queue=args.max_queue,
        max_upload_buffer_mb=args.max_upload_buffer_mb,
        deadline_s=args.deadline,
        body_timeout_s=args.body_timeout,
        body_idle_timeout_s=args.body_idle_timeout,
        max_batch_size=args.max_batch_size,
        max_batch_files=args.max_batch_files,
        max_batch_delay_ms=args.max_batch_delay_ms,
        api_keys=read_api_keys(Path(args.api_key_file), warn=_warn) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin),
    )
    serve(settings, host=args.host, port=args.port, drain_s=args.drain_seconds, access_log=args.access_log)
    return 0


def _warn(message: str) -> None:
    print(f"imagenet-zoo: warning: {message}", file=sys.stderr)

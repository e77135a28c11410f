"""`imagenet-zoo selftest`: every registered engine, in every precision it can run here, against the
reference on packaged photos (exit 1 on a mismatch)."""

from __future__ import annotations

import argparse
from typing import Any

from imagenet_zoo.selftest import Check, skipped_engines
from imagenet_zoo.selftest import run as run_checks

NAME = "selftest"
HELP = "check every engine and precision on this machine"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checks = []
    print(selftest_header())
    for check in run_checks():
        checks.append(check)
        print(selftest_row(check), flush=True)
    for line in skipped_engines():
        print(f"skipped {line}")
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


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

"""What every command's output shares: text from outside made safe for a terminal, and JSON or a table
on stdout."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable
from typing import Any


def printable(text: str) -> str:
    """Text from outside (file names, labels, messages) made safe for a terminal: control and format
    characters (escape sequences, bidi overrides, new lines) are shown as escapes, never interpreted, and
    so are the surrogates that stand for a file name's bytes that are not UTF-8 (which no terminal
    encoding can write)."""
    return "".join(
        c if unicodedata.category(c) not in ("Cc", "Cf", "Cs") else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def emit(rows: Any, fmt: str, table: Callable[[Any], str]) -> None:
    """`rows` on stdout as JSON, or as the table `table` makes of them."""
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table(rows))

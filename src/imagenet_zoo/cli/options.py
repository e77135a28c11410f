"""What several subcommands share: the parser's actions, argument types, and the option groups that map
onto one `LoadConfig` (model, engine, precision, device, decode), whose choices the engine registry gives."""

from __future__ import annotations

import argparse
import dataclasses
import math
from argparse import ArgumentParser
from collections.abc import Callable, Iterable
from typing import Any

from imagenet_zoo.api import resolve_model
from imagenet_zoo.errors import ImagenetZooError, UsageError
from imagenet_zoo.pipeline import MAX_BATCH_SIZE, LoadConfig
from imagenet_zoo.registry import DEFAULT_MODEL
from imagenet_zoo.specs import MAX_CLASSES, Task

GIVEN = "given"  # the single-valued options a command line set explicitly (an attribute of the namespace)


class StoreOnce(argparse.Action):
    """A single-valued option given twice is an error, not a silent "the last one wins"."""

    def __call__(self, parser: ArgumentParser, namespace: Any, values: Any, flag: Any = None) -> None:
        given = vars(namespace).setdefault(GIVEN, set())
        if self.dest in given:
            parser.error(f"{flag} was given twice; it takes one value here")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class Accumulate(argparse.Action):
    """A list option adds up over repeats (`--precision fp32 --precision int8` is both); the first one
    given replaces the default."""

    def __call__(self, parser: ArgumentParser, namespace: Any, values: Any, flag: Any = None) -> None:
        current = getattr(namespace, self.dest)
        given = [item for value in values for item in (value if isinstance(value, list) else [value])]
        items = given if current is self.default else [*current, *given]
        setattr(namespace, self.dest, list(dict.fromkeys(items)))
        vars(namespace).setdefault(GIVEN, set()).add(self.dest)


class Parser(argparse.ArgumentParser):
    """argparse with `StoreOnce` as the plain option action, for every sub-command too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)


def given(args: argparse.Namespace, *dests: str) -> list[str]:
    """Which of these options the command line set itself (as `--option-name`)."""
    explicit = vars(args).get(GIVEN, set())
    return [
        f"--{dest.replace('_', '-')}" for dest in dests if dest in explicit or getattr(args, dest) is True
    ]


def refuse(args: argparse.Namespace, dests: Iterable[str], why: str) -> None:
    """A usage error naming the given options that this path of the command does not use, and why."""
    unused = given(args, *dests)
    if unused:
        raise UsageError(f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used {why}")


def model_name(value: str) -> str:
    """A zoo model's canonical name, or a bundle's path (other processes resolve it the same way)."""
    try:
        return resolve_model(value).spec.name
    except ImagenetZooError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The largest counts a command line can mean: beyond them an option is a mistake, refused before any work
# (a batch of 2**63 photos failed deep in the job, a million decoding threads would exhaust the machine).
MAX_COUNT = 1_000_000
MAX_TOP_GROUPS = 1000  # groups at one depth are disjoint sets of ImageNet's 1,000 classes


def positive(value: str) -> int:
    digits = value.lstrip("0") if value.isascii() and value.isdigit() else ""
    if not digits or len(digits) > len(str(MAX_COUNT)) or int(digits) > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_COUNT:,}, got {value!r}")
    return int(digits)


def _at_most(limit: int, what: str) -> Callable[[str], int]:
    def count(value: str) -> int:
        if positive(value) > limit:
            raise argparse.ArgumentTypeError(f"{what} at most {limit:,}, got {value!r}".lstrip())
        return int(value)

    return count


batch_size = _at_most(MAX_BATCH_SIZE, "photos per batch:")
top_groups = _at_most(MAX_TOP_GROUPS, "groups:")


def finite(value: str) -> float:
    """A number that is one: nan and inf are refused here, where a later check such as min() would let
    NaN through."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def top_k(value: str) -> int:
    """How many labels: at most what any model may have (each model reports at most its classes)."""
    if len(value) > len(str(MAX_CLASSES)) or positive(value) > MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"a model has at most {MAX_CLASSES:,} classes, got {value!r}")
    return int(value)


def check_top(args: argparse.Namespace, models: Iterable[str]) -> None:
    """An explicit `--top` beyond a model's classes is a usage error (the default is cut to fit)."""
    if "top" not in vars(args).get(GIVEN, set()):
        return
    for name in models:
        classes = resolve_model(name).spec.num_classes
        if args.top > classes:
            raise UsageError(f"--top {args.top}: {name} has {classes:,} classes")


def words(value: str) -> list[str]:
    """`--groups dog,bird`: each checked now, so an unknown or ambiguous word is a usage error."""
    from imagenet_zoo.data.hierarchy import wordnet

    names = [word.strip() for word in value.split(",") if word.strip()]
    try:
        return [wordnet().group(word).id for word in names]
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def word(value: str) -> str:
    [synset] = words(value)
    return synset


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=model_name,
        default=DEFAULT_MODEL,
        help=f"a zoo model (see `imagenet-zoo models`) or a bundle folder (default {DEFAULT_MODEL})",
    )


def add_models_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--model` for a command that takes several models (or repeats the flag)."""
    add_list_option(parser, "--model", [DEFAULT_MODEL], type=model_name, metavar="M", help=help)


def add_list_option(parser: argparse.ArgumentParser, flag: str, default: list[Any], **kwargs: Any) -> None:
    """An option that takes several values, given at once or by repeating the flag."""
    parser.add_argument(flag, nargs="+", action=Accumulate, default=default, **kwargs)


# The load options most commands take: which engine runs the model, and how photos are decoded for it.
ENGINE_OPTIONS = ("engine", "precision", "device", "decode")


def add_load_options(parser: argparse.ArgumentParser, *names: str, **defaults: Any) -> None:
    """Flags for these `LoadConfig` fields, made from the fields' declarations (`pipeline.load_option`):
    `--batch-size` for `batch_size`, its help, choices or bound; `defaults` are this command's own."""
    declared = _load_options()
    for name in names:
        option, meta = declared[name], declared[name].metadata
        default = defaults.get(name, option.default)
        text = meta["help"] if isinstance(meta["help"], str) else meta["help"]()
        kwargs: dict[str, Any] = {"default": default, "help": text.format(default=default)}
        if meta["choices"] is not None:
            kwargs["choices"] = list(meta["choices"]())
        if meta["most"] is not None:
            kwargs["type"] = _at_most(meta["most"], "")
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)


def add_format_option(parser: argparse.ArgumentParser, *formats: str) -> None:
    parser.add_argument(
        "--format", choices=formats, default=formats[0], help=f"output on stdout (default {formats[0]})"
    )


def load_config(args: argparse.Namespace, *, task: Task = "classify", **overrides: Any) -> LoadConfig:
    """The load configuration a command line asks for: its model and whichever load options it has."""
    names = ["model", *_load_options()]
    options = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return LoadConfig(task=task, **(options | overrides))


def _load_options() -> dict[str, dataclasses.Field[Any]]:
    """The `LoadConfig` fields that are flags (made with `specs.load_option`), by name."""
    return {option.name: option for option in dataclasses.fields(LoadConfig) if option.metadata}

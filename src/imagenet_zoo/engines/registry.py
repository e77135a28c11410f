"""Engines as configuration, as Triton's backends are: each engine declares what it can do, and everything
that offers a choice of engine (the command line, `load`, bench, selftest, eval, compare, the service and
the cluster) asks this registry, never an if/else of its own.

An engine is one module exposing an `EngineSpec` as `ENGINE`, listed once in `BUILTIN` below. Engines of
other packages register through the `imagenet_zoo.engines` entry-point group (the value is an
`EngineSpec`), or in-process with `register_engine`. A name is never replaced.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Protocol, TypedDict

from imagenet_zoo.engines.base import Engine
from imagenet_zoo.errors import (
    ExplanationUnsupportedError,
    MissingExtraError,
    UnsupportedPrecisionError,
    UsageError,
    install_hint,
)
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import ExplainMethod, Task, load_option

BUILTIN = ("imagenet_zoo.engines.openvino", "imagenet_zoo.engines.keras", "imagenet_zoo.engines.torch")
ENTRY_POINT_GROUP = "imagenet_zoo.engines"
DEFAULT_ENGINE = (
    "openvino"  # same top-5 as Keras on the parity tests, 3-10x faster, no TensorFlow at run time
)
AUTO = "auto"  # the engine or device: chosen for this machine and the work (`choose_engine`)
# Below this many photos a run stays on the CPU even where there is a GPU: starting torch, CUDA and the
# model there takes seconds, longer than OpenVINO takes for them.
GPU_WORTH_PHOTOS = 64
_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # the driver lists each GPU here; reading it costs nothing
_NVIDIA_DEVICE = Path("/dev/nvidia0")  # what a container given a GPU has even without the driver's /proc


class EngineLoader(Protocol):
    def __call__(self, model: RegisteredModel, request: EngineRequest) -> Engine: ...


DEFAULT_CALIBRATION_SAMPLES = 300


@dataclass(frozen=True)
class CalibrationReport:
    model: str
    path: Path  # what was made
    samples: int  # photos it was calibrated on
    skipped: list[str]  # photos that could not be read


class Calibration(Protocol):
    """A precision made from the fp32 model and the user's photos before use (int8)."""

    def is_ready(self, model: RegisteredModel, precision: str, *, random_weights: bool) -> bool: ...

    def run(
        self, model: RegisteredModel, precision: str, photos: Path, *, samples: int, random_weights: bool
    ) -> CalibrationReport: ...


def _always(precision: str, device: str) -> str | None:
    return None


def _cpu_only(device: str) -> bool:
    return device == "cpu"


@dataclass(frozen=True)
class EngineSpec:
    """An engine's name, how it loads a model, and what it can do."""

    name: str
    summary: str  # one line for `--engine`'s help
    load: EngineLoader
    # The packages (import names) it runs on, and the extra of imagenet-zoo that installs them.
    requires: tuple[str, ...] = ()
    extra: str | None = None
    precisions: tuple[str, ...] = ("fp32",)
    devices: tuple[str, ...] = ("cpu",)
    explain_methods: frozenset[ExplainMethod] = frozenset()
    explain_precisions: tuple[str, ...] = ("fp32",)  # heatmaps in these precisions only
    features: bool = True  # can output pooled features (extract, train)
    calibration: Calibration | None = None
    calibrated_precisions: frozenset[str] = frozenset()  # need `calibration` first
    # Whether loading `request` reuses what an earlier load converted (None: nothing is converted).
    converted: Callable[[RegisteredModel, EngineRequest], bool] | None = field(default=None, compare=False)
    # Makes what loading `request` needs (a conversion, a download) without loading it: a server does
    # this for every model it serves before it reports ready. None: loading needs nothing made first.
    prepare: Callable[[RegisteredModel, EngineRequest], object] | None = field(default=None, compare=False)
    # Why a precision cannot run on a device of this machine (None: it can); e.g. bf16 without native bf16.
    unavailable: Callable[[str, str], str | None] = field(default=_always, compare=False)
    device_available: Callable[[str], bool] = field(default=_cpu_only, compare=False)

    def resolve_device(self, device: str) -> str:
        """`auto`: the first of this engine's devices available here; else the device itself, checked."""
        if device == AUTO:
            return next((d for d in self.devices if self.device_available(d)), self.devices[0])
        if device not in self.devices:
            raise UsageError(
                f"the {self.name} engine runs on {' or '.join(self.devices)}, not {device!r}"
                + _others("device", device, lambda spec: device in spec.devices)
            )
        if not self.device_available(device):
            raise UsageError(f"no {device} device is available to the {self.name} engine on this machine")
        return device

    @property
    def missing(self) -> list[str]:
        """The packages it runs on that are not installed (nothing is imported to find out)."""
        return [package for package in self.requires if find_spec(package) is None]

    @property
    def installed(self) -> bool:
        return not self.missing

    @property
    def how_to_install(self) -> str:
        """The command that brings its packages: its extra of imagenet-zoo, or the packages themselves."""
        return install_hint(self.extra) if self.extra else f"pip install {' '.join(self.requires)}"

    def check_installed(self) -> None:
        """Refuse, naming the extra to install, an engine whose packages are missing."""
        if self.missing:
            raise MissingExtraError(
                f"the {self.name} engine needs {', '.join(self.missing)}: {self.how_to_install}"
            )

    def check(self, request: EngineRequest, explain_method: ExplainMethod, *, model: str) -> None:
        """Refuse, saying why and what would work, what this engine cannot load for `model`."""
        self.check_installed()
        if request.precision not in self.precisions:
            raise UnsupportedPrecisionError(
                f"the {self.name} engine runs {_listed(self.precisions)}"
                + _others("precision", request.precision, lambda spec: request.precision in spec.precisions)
            )
        if request.task == "features" and not self.features:
            raise UsageError(f"the {self.name} engine does not extract features")
        if request.explain:
            self.check_explain(explain_method, request.precision, model=model)

    def check_explain(self, method: ExplainMethod, precision: str, *, model: str) -> None:
        """Refuse, saying why, a heatmap this engine cannot compute for `model` in `precision`."""
        if method not in self.explain_methods:
            why = {
                "cam": f"{model} has no class activation maps on the {self.name} engine",
                "grad-cam": f"{model}'s head is not global average pooling + a linear layer, so its "
                "heatmap needs Grad-CAM, and Grad-CAM needs gradients, which the "
                f"{self.name} engine does not compute",
            }[method]
            others = [s for s in engine_registry() if method in s.explain_methods]
            others.sort(key=lambda spec: not spec.installed)  # one that is installed, first
            hint = f": add --engine {others[0].name} (engine={others[0].name!r})" if others else ""
            if others and not others[0].installed:
                hint += f", which needs {others[0].how_to_install}"
            raise ExplanationUnsupportedError(why + hint)
        if precision not in self.explain_precisions:
            raise ExplanationUnsupportedError(
                f"heatmaps run in {_listed(self.explain_precisions)} on the {self.name} engine: the "
                f"{precision} model is made without the class maps"
            )

    def check_available(self, precision: str, device: str) -> None:
        reason = self.unavailable(precision, device)
        if reason is not None:
            raise UnsupportedPrecisionError(reason)


def _listed(items: tuple[str, ...]) -> str:
    return f"{items[0]} only" if len(items) == 1 else " or ".join(items)


def _others(what: str, value: str, accepts: Callable[[EngineSpec], bool]) -> str:
    names = [spec.name for spec in engine_registry() if accepts(spec)]
    return (
        f"; {value} needs --engine {' or '.join(names)}" if names else f"; no engine has the {what} {value}"
    )


class EngineRegistry:
    """Engines by name, in registration order; registering a taken name is an error."""

    def __init__(self) -> None:
        self._engines: dict[str, EngineSpec] = {}

    def register(self, spec: EngineSpec) -> None:
        if spec.name in self._engines or spec.name == AUTO:
            raise ValueError(f"an engine is already named {spec.name!r}; an engine is never replaced")
        self._engines[spec.name] = spec

    def get(self, name: str) -> EngineSpec:
        try:
            return self._engines[name]
        except KeyError:
            raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(self._engines)}") from None

    def names(self) -> list[str]:
        return list(self._engines)

    def installed(self) -> list[str]:
        """The engines whose packages are installed: those offered where nobody named one."""
        return [name for name, spec in self._engines.items() if spec.installed]

    def devices(self) -> list[str]:
        """Every device some engine runs on, with `auto` first."""
        return list(dict.fromkeys([AUTO, *(d for spec in self for d in spec.devices)]))

    def precisions(self) -> list[str]:
        return list(dict.fromkeys(p for spec in self for p in spec.precisions))

    def __iter__(self) -> Iterator[EngineSpec]:
        return iter(self._engines.values())


@cache
def engine_registry() -> EngineRegistry:
    """The built-in engines, then those other installed packages declare (entry points): one that fails to
    load or takes a taken name is skipped with a line naming its package."""
    registry = EngineRegistry()
    for module in BUILTIN:
        registry.register(importlib.import_module(module).ENGINE)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = entry.load()
            if not isinstance(spec, EngineSpec):
                raise TypeError(f"{entry.value} is not an EngineSpec")
            registry.register(spec)
        except Exception as exc:  # another package's code: whatever it raises, every command still runs
            owner = entry.dist.name if entry.dist is not None else "an unknown package"
            print(
                f"imagenet-zoo: skipped the engine {entry.name!r} of {owner} ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )
    return registry


def register_engine(spec: EngineSpec) -> None:
    """Add an engine for this process (another process finds it only through an entry point)."""
    engine_registry().register(spec)


def get_engine(name: str) -> EngineSpec:
    return engine_registry().get(name)


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    device: str
    reason: str  # why, for the line the command line prints


def choose_engine(engine: str, device: str, *, photos: int | None = None) -> EngineChoice:
    """The engine and device to run: as given, or for `auto` the default engine on the CPU, and the first
    engine that runs on the GPU when this machine has one and `photos` (None: a service, a library user:
    many) are worth its start-up. Nothing is imported to find there is no GPU."""
    if engine != AUTO:
        spec = get_engine(engine)
        spec.check_installed()
        return EngineChoice(engine, spec.resolve_device(device), "as asked")
    if device not in (AUTO, "cpu"):
        spec = next((s for s in engine_registry() if device in s.devices), get_engine(DEFAULT_ENGINE))
        return EngineChoice(spec.name, spec.resolve_device(device), f"the engine for {device}")
    if device == "cpu":
        return EngineChoice(DEFAULT_ENGINE, "cpu", "the CPU's fastest engine")
    if photos is not None and photos < GPU_WORTH_PHOTOS:
        return EngineChoice(DEFAULT_ENGINE, "cpu", f"{photos} photos: the GPU's start-up would cost more")
    gpu = next((s for s in engine_registry() if "cuda" in s.devices and s.installed), None)
    if gpu is not None and gpu_present() and gpu.device_available("cuda"):
        return EngineChoice(gpu.name, "cuda", "this machine has an NVIDIA GPU")
    return EngineChoice(DEFAULT_ENGINE, "cpu", "no GPU")


def gpu_present() -> bool:
    """Whether the NVIDIA driver lists a GPU (`torch.cuda` still decides whether it can be used)."""
    try:
        return _NVIDIA_DEVICE.exists() or any(_NVIDIA_GPUS.iterdir())
    except OSError:
        return False


def engine_summaries() -> str:
    """Each registered engine's one-line summary, for a help text."""
    return "; ".join(spec.summary for spec in engine_registry())


def per_engine(what: Callable[[EngineSpec], Sequence[str]]) -> str:
    """What each registered engine has of something (its precisions, its devices), for a help text."""
    return "; ".join(f"{spec.name}: {', '.join(what(spec))}" for spec in engine_registry())


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """The load options an engine reads, declared once: `pipeline.LoadConfig` (the commands' flags,
    `load`'s keywords, the job identity) and `EngineRequest` both have them. A new one is a field here, a
    line of `EngineKeywords`, and the engine's code that reads it."""

    precision: str = load_option(
        "fp32",
        lambda: "fp32 (default) or another the engine has: " + per_engine(lambda spec: spec.precisions),
        choices=lambda: engine_registry().precisions(),
        answers=True,
    )
    explain: bool = False  # also heatmaps (`Engine.explain`; the records' --explain asks for them)
    threads: int | None = None  # inference threads (default: the engine's own choice)


class EngineKeywords(TypedDict, total=False):
    """`EngineOptions` as keyword arguments (`pipeline.LoadKeywords`)."""

    precision: str
    explain: bool
    threads: int | None


@dataclass(frozen=True, kw_only=True)
class EngineRequest(EngineOptions):
    """What an engine is asked to load for a model (checked against its spec first)."""

    device: str = "cpu"  # a device of the engine, never "auto" (resolved before loading)
    task: Task = "classify"  # rows of class logits, or of pooled features
    progress: bool = True  # a progress bar while weights download
    random_weights: bool = False  # for benchmarks of models whose weights are not on this machine

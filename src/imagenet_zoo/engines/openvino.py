"""The fast CPU engine: OpenVINO running an IR built once from the Keras model's graph (`openvino_ir.py`).

Building needs Keras (on any backend, TensorFlow not required) and happens once per model and variant;
later runs compile the cached IR directly and never import Keras, which is what makes a cold `classify`
fast.

Precisions: `fp32` (the reference), `bf16` (same IR, compiled with a bf16 inference hint where the CPU
supports it) and `int8` (a separate IR, post-training quantized by NNCF; see `quantize.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imagenet_zoo.engines.base import Engine, pixel_batch
from imagenet_zoo.engines.cache import resolved_file
from imagenet_zoo.engines.cpu import isa_limited_below_bf16
from imagenet_zoo.engines.explain import class_maps
from imagenet_zoo.engines.openvino_ir import (
    IR_FILE,
    cam_head,
    check_ir,
    convert_to_ir,
    import_openvino,
    int8_ir,
    ir_dir,
)
from imagenet_zoo.engines.registry import CalibrationReport, EngineRequest, EngineSpec
from imagenet_zoo.errors import UnsupportedPrecisionError
from imagenet_zoo.explain import ClassChoice
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import ExplainMethod

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX), as OpenVINO sees it, within
    `ONEDNN_MAX_CPU_ISA`."""
    if isa_limited_below_bf16():
        return False
    return "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoEngine(Engine):
    """One compiled model and its inference request: calls from several threads take turns on it (the
    CPU's cores already work on each call), while decoding around them runs in parallel."""

    name = "openvino"

    def __init__(self, xml: Path, precision: Precision, *, threads: int | None = None) -> None:
        self.precision = precision
        self.xml = resolved_file(xml.parent, xml.name)  # the .xml and its .bin from one version
        check_ir(self.xml)
        hint = "bf16" if precision == "bf16" else "f32"
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:  # a share of the machine (a Ray actor's CPUs), not all of its cores
            config["INFERENCE_NUM_THREADS"] = threads
            # Unpinned: OpenVINO would pin every such process's threads to the same first cores.
            config["ENABLE_CPU_PINNING"] = False
        self._compiled = import_openvino().Core().compile_model(str(xml), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._turn = threading.Lock()
        ranks = [output.get_partial_shape().rank.get_length() for output in self._compiled.outputs]
        self._logits = ranks.index(2) if 2 in ranks else 0  # a CAM model's other output: its feature map

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The (rows, classes) output alone: a CAM model's feature map is not copied out of the request."""
        return self._copied(batch, [self._logits])[0]

    def _copied(self, batch: np.ndarray, outputs: Iterable[int]) -> list[np.ndarray]:
        """These outputs of one call, copied before the request is reused."""
        with self._turn:
            result = self._request.infer({0: pixel_batch(batch)})
            return [np.array(result[i], dtype=np.float32) for i in outputs]


class OpenVinoCamEngine(OpenVinoEngine):
    """A CAM model's IR: the last feature map with the logits, from the same forward pass, and the class
    maps made from it (`explain.class_maps`)."""

    explain_method: ExplainMethod = "cam"

    def __init__(self, xml: Path, precision: Precision, *, threads: int | None = None) -> None:
        super().__init__(xml, precision, threads=threads)
        self._head = cam_head(self.xml)

    def explain(self, batch: np.ndarray, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, features = self._copied(batch, [self._logits, 1 - self._logits])
        return class_maps(logits, features, self._head, choice)


def load(model: RegisteredModel, request: EngineRequest) -> Engine:
    """An engine for `model`, from the cached IR (converted now if needed; int8 must be quantized first);
    with `request.explain`, one that also draws class activation maps."""
    precision: Precision = request.precision  # type: ignore[assignment]  # checked against the spec
    kind = OpenVinoCamEngine if request.explain else OpenVinoEngine
    return kind(ir_for(model, request), precision, threads=request.threads)


def ir_for(model: RegisteredModel, request: EngineRequest) -> Path:
    """The IR a request loads, converted now if needed (an int8 IR must be quantized first)."""
    options = {"random_weights": request.random_weights, "progress": request.progress}
    if request.explain:
        return convert_to_ir(model, explain=True, **options)
    if request.precision == "int8":
        if request.task == "features":
            raise UnsupportedPrecisionError("feature extraction runs in fp32 or bf16")
        return int8_ir(model, random_weights=request.random_weights)
    return convert_to_ir(model, features=request.task == "features", **options)


class _Int8Calibration:
    """int8 is post-training quantized by NNCF on the user's photos (`quantize.py`)."""

    def is_ready(self, model: RegisteredModel, precision: str, *, random_weights: bool) -> bool:
        return (ir_dir(model, "int8", random_weights=random_weights) / IR_FILE).is_file()

    def run(
        self, model: RegisteredModel, precision: str, photos: Path, *, samples: int, random_weights: bool
    ) -> CalibrationReport:
        from imagenet_zoo.engines.quantize import quantize

        return quantize(model, photos, samples=samples, progress=False, random_weights=random_weights)


def _unavailable(precision: str, device: str) -> str | None:
    if precision == "bf16" and not cpu_supports_bf16():
        return "bf16 needs a CPU with native bf16 support (AVX512_BF16 or AMX)"
    return None


ENGINE = EngineSpec(
    name="openvino",
    summary="openvino (default, fast; built once from the network's graph and cached): fp32, bf16, int8",
    load=load,
    requires=("openvino",),
    precisions=PRECISIONS,
    explain_methods=frozenset({"cam"}),
    explain_precisions=("fp32", "bf16"),
    calibration=_Int8Calibration(),
    calibrated_precisions=frozenset({"int8"}),
    prepare=ir_for,
    converted=lambda model, request: (
        ir_dir(model, random_weights=request.random_weights, features=request.task == "features") / IR_FILE
    ).is_file(),
    unavailable=_unavailable,
)

"""The OpenVINO IR cache: a model built once from its graph (`network.network_graph` -> OpenVINO's own
operations, `openvino_graph.py`) into `$IMAGENET_ZOO_HOME/openvino/`, in a folder whose name is a
digest of everything that determines it (weights hash, input contract, OpenVINO version), kept as
`engines.cache` keeps every converted model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.data.preprocess import Normalization, normalization
from imagenet_zoo.engines.cache import check_recorded, folder_name, write_recorded
from imagenet_zoo.engines.explain import explaining_graph
from imagenet_zoo.engines.graph import Graph
from imagenet_zoo.engines.network import network_graph
from imagenet_zoo.engines.registry import EngineRequest
from imagenet_zoo.errors import QuantizedModelMissingError
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import Task
from imagenet_zoo.weights.download import exclusive_lock
from imagenet_zoo.weights.store import cache_dir

IR_FILE = "model.xml"
# Part of every IR's cache key: raised when the conversion changes in a way that invalidates cached IRs
# (4: takes uint8 pixels and scales them inside; 3: float32 input; 2 and before came through a
# TensorFlow SavedModel).
_CONVERSION_VERSION = 4


def import_openvino() -> Any:
    """OpenVINO, imported only when a model is converted or compiled."""
    import openvino

    return openvino


def ir_dir(
    model: RegisteredModel,
    precision: str = "fp32",
    *,
    random_weights: bool = False,
    features: bool = False,
    explain: bool = False,
) -> Path:
    """The cache folder of a model's IR: fp32 (also compiled as bf16) or int8.

    `random_weights` IRs (for benchmarking models whose weights are not on this machine) live under
    their own key, so they can never be mistaken for the pretrained ones.
    """
    spec = model.spec
    weights_key = "random" if random_weights else spec.weights.hash
    key = [
        _CONVERSION_VERSION,
        weights_key,
        repr(spec.data_config),
        spec.num_classes,
        import_openvino().get_version(),
    ]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    variant = ("int8" if precision == "int8" else "fp32") + ("-random" if random_weights else "")
    variant += "-features" if features else ""  # include_top=False, pooling="avg": one vector per image
    variant += "-cam" if explain else ""  # logits and the last feature map (engines/explain.py)
    return cache_dir() / "openvino" / folder_name(spec.name) / f"{digest}-{variant}"


IR_FILES = (IR_FILE, "model.bin")


HEAD_FILE = "cam_head.npy"  # a CAM model's head matrix (`engines.explain.CamModel.head`)


def write_ir(ov_model: Any, dest: Path, meta: dict[str, Any], head: np.ndarray | None = None) -> None:
    """Save an IR (and a CAM model's head), its files' SHA-256 recorded: `check_ir` refuses a file
    swapped since."""

    def write(folder: Path) -> None:
        # compress_to_fp16 defaults to True and would silently round every fp32 weight.
        import_openvino().save_model(ov_model, str(folder / IR_FILE), compress_to_fp16=False)
        if head is not None:
            np.save(folder / HEAD_FILE, head, allow_pickle=False)

    write_recorded(dest, write, meta)


def check_ir(xml: Path) -> None:
    """The IR's files are the ones it was written with (a swapped file in a shared cache is refused)."""
    check_recorded(xml.parent, IR_FILES)


def cam_head(xml: Path) -> np.ndarray | None:
    """The head matrix of a checked CAM IR (None: its feature map is the class maps)."""
    path = xml.parent / HEAD_FILE
    return np.load(path, allow_pickle=False) if path.is_file() else None


def convert_to_ir(
    model: RegisteredModel,
    *,
    progress: bool = True,
    random_weights: bool = False,
    features: bool = False,
    explain: bool = False,
) -> Path:
    """The fp32 IR of `model` (or of its pooled feature extractor, or of its CAM model with `explain`),
    built now if not cached."""
    dest = ir_dir(model, random_weights=random_weights, features=features, explain=explain)
    with exclusive_lock(dest):
        if not (dest / IR_FILE).is_file():
            task: Task = "features" if features else "classify"
            request = EngineRequest(task=task, progress=progress, random_weights=random_weights)
            graph, head = network_graph(model, request), None
            if explain:
                graph, head = explaining_graph(graph, "cam", model.spec.name)
            ov_model = graph_to_openvino(graph, normalization(model.spec.data_config.mode))
            meta = {
                "model": model.spec.name,
                "weights_hash": None if random_weights else model.spec.weights.hash,
            }
            write_ir(ov_model, dest, meta, head)
    return dest / IR_FILE


def graph_to_openvino(graph: Graph, scaling: Normalization) -> Any:
    """The OpenVINO model of a graph, built with OpenVINO's own operations (no SavedModel, no
    TensorFlow), taking uint8 pixels that it scales as `scaling` says."""
    from imagenet_zoo.engines.openvino_graph import build_model

    return build_model(graph.spec, graph.weights, scaling)


def int8_ir(model: RegisteredModel, *, random_weights: bool = False) -> Path:
    """The cached int8 IR of `model` (raises `QuantizedModelMissingError`, saying how to make one)."""
    xml = ir_dir(model, "int8", random_weights=random_weights) / IR_FILE
    if not xml.is_file():
        raise QuantizedModelMissingError(
            f"no int8 model for {model.spec.name} yet: run "
            f"`imagenet-zoo quantize {model.spec.name} --calibration DIR` with a folder of your photos"
        )
    return xml


def gflops_per_image(xml: Path) -> float:
    """2 x multiply-adds of every convolution and matrix multiply in the IR, per image, in GFLOPs."""
    ov_model = import_openvino().Core().read_model(str(xml))
    flops = 0
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("Convolution", "GroupConvolution"):
            out_shape = op.get_output_partial_shape(0).get_min_shape()
            kernel = op.input(1).get_partial_shape().get_min_shape()
            # Convolution kernel: (out, in, kh, kw); GroupConvolution: (groups, out/g, in/g, kh, kw).
            per_output = int(np.prod(kernel[1:])) if kind == "Convolution" else int(np.prod(kernel[2:]))
            flops += 2 * int(np.prod(out_shape[1:])) * per_output
        elif kind == "MatMul":
            weights = op.input(1).get_partial_shape().get_min_shape()
            flops += 2 * int(np.prod(weights))
    return flops / 1e9

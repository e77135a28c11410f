"""The OpenVINO IR cache: a model converted once from Keras (Keras -> TensorFlow SavedModel -> OpenVINO
IR) into `$IMAGENET_ZOO_HOME/openvino/`, in a folder whose name is a digest of everything that determines it
(weights hash, input contract, OpenVINO version). Each IR records its files' SHA-256 and is replaced only
as a whole version, so a reader never loads a swapped or half-written file.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.engines.explain import cam_model
from imagenet_zoo.errors import QuantizedModelMissingError, WeightsIntegrityError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.weights.download import exclusive_lock, file_digest
from imagenet_zoo.weights.store import cache_dir

IR_FILE = "model.xml"
# Part of every IR's cache key: raised when the conversion changes in a way that invalidates cached IRs.
_CONVERSION_VERSION = 2


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
    variant += "-explain" if explain else ""  # logits and class activation maps (engines/explain.py)
    return cache_dir() / "openvino" / _folder_name(spec.name) / f"{digest}-{variant}"


def _folder_name(name: str) -> str:
    """A model's name as one safe path component: a bundle's name is its path (`../dogs`, `/srv/x`), and
    the digest beside it already tells bundles of the same name apart."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


_OLD_VERSION_S = 600  # a replaced version is deleted once this old: long after any reader opened it


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """A new version of the folder `dest`, published only if the block completes.

    `dest` is a symbolic link to a versioned folder beside it, and a new version replaces the link
    in one rename, so a reader that resolves `dest` once (`resolved_file`) reads one version whole, never
    a half-replaced folder. Replaced versions are deleted by a later write, once they are old."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f"{dest.name}.v-"))
    try:
        yield version
        link = dest.with_name(f".{dest.name}.link-{version.name}")
        link.symlink_to(version.name)
        os.replace(link, dest)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    _remove_old_versions(dest, keep=version)


def _remove_old_versions(dest: Path, keep: Path) -> None:
    now = time.time()
    for old in dest.parent.glob(f"{dest.name}.v-*"):
        if old != keep and now - old.stat().st_mtime > _OLD_VERSION_S:
            shutil.rmtree(old, ignore_errors=True)


def resolved_file(folder: Path, name: str) -> Path:
    """`name` inside the version `folder` points to now (read every file of a model from one version)."""
    return folder.resolve() / name


IR_FILES = (IR_FILE, "model.bin")


def write_ir(ov_model: Any, dest: Path, meta: dict[str, Any]) -> None:
    """Save an IR, with the SHA-256 of its files in meta.json: `check_ir` refuses a file swapped since."""
    with atomic_dir(dest) as tmp:
        # compress_to_fp16 defaults to True and would silently round every fp32 weight.
        import_openvino().save_model(ov_model, str(tmp / IR_FILE), compress_to_fp16=False)
        files = {name: file_digest(tmp / name, "sha256") for name in IR_FILES}
        (tmp / "meta.json").write_text(json.dumps({**meta, "files": files}, indent=2))


def check_ir(xml: Path) -> None:
    """The IR's files are the ones it was written with (a swapped file in a shared cache is refused)."""
    try:
        recorded = json.loads((xml.parent / "meta.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsIntegrityError(
            f"{xml.parent} has no record of its files ({exc}); delete it to convert again"
        ) from None
    for name in IR_FILES:
        if file_digest(xml.parent / name, "sha256") != recorded.get(name):
            raise WeightsIntegrityError(
                f"{xml.parent / name} changed since it was written; delete {xml.parent} to convert again"
            )


def convert_to_ir(
    model: RegisteredModel,
    *,
    progress: bool = True,
    random_weights: bool = False,
    features: bool = False,
    explain: bool = False,
) -> Path:
    """The fp32 IR of `model` (or of its pooled feature extractor, or of its CAM model with `explain`),
    converted from Keras if not cached."""
    dest = ir_dir(model, random_weights=random_weights, features=features, explain=explain)
    with exclusive_lock(dest):
        if not (dest / IR_FILE).is_file():
            weights = (
                None
                if random_weights
                else model.weights.fetch(model.spec, include_top=not features, progress=progress)
            )
            pooling: Pooling = "avg" if features else None

            def build() -> Any:
                keras_model = model.build(
                    weights=weights, include_top=not features, pooling=pooling, input_shape=None
                )
                return cam_model(keras_model) if explain else keras_model

            ov_model = keras_to_openvino(build)
            meta = {
                "model": model.spec.name,
                "weights_hash": None if random_weights else model.spec.weights.hash,
            }
            write_ir(ov_model, dest, meta)
    return dest / IR_FILE


def keras_to_openvino(build: Callable[[], Any]) -> Any:
    """Keras -> TensorFlow SavedModel -> OpenVINO model.

    The Keras model is released before OpenVINO reads the SavedModel, so the weights are never held three
    times at once (VGG19's are 550 MB). Keras's ONNX export of VGG16 needed over 21 GB; this path does not.
    """
    from imagenet_zoo.models._keras import import_keras

    keras = import_keras()
    with tempfile.TemporaryDirectory(prefix="imagenet-zoo-savedmodel-") as saved_model:
        keras_model = build()
        keras_model.export(saved_model, format="tf_saved_model", verbose=False)
        del keras_model
        keras.backend.clear_session()
        gc.collect()
        return import_openvino().convert_model(saved_model)


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

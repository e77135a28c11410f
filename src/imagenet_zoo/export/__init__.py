"""`imagenet-zoo export`: a model as a file other runtimes read (ONNX Runtime, OpenVINO, Triton), beside a
`model.json` that says how to feed it.

The exported model takes photos already resized and cropped to its input size, `uint8`, NHWC, RGB (what
Pillow gives), scales them inside and outputs probabilities. `model.json` names the resize that comes
before (`data.preprocess.resize_and_crop`), the input and output, and the classes in output order. With
`triton`, the folder is a Triton model repository: `MODEL/config.pbtxt`, `MODEL/1/<the model>`, the
class names as Triton's `labels.txt`, and `model.json` beside `config.pbtxt`.

Everything is written into a new folder beside the output and moved into place when whole; an existing
folder that is not empty is only written into with `overwrite`, and then only the files named here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from imagenet_zoo.data.preprocess import normalization
from imagenet_zoo.engines.registry import EngineRequest, get_engine
from imagenet_zoo.errors import MissingExtraError, ModelTranslationError, UsageError, install_hint
from imagenet_zoo.export.contract import INPUT_NAME, OUTPUT_NAME
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import ModelSpec

Format = Literal["onnx", "openvino"]
FORMATS: tuple[Format, ...] = ("onnx", "openvino")
PRECISIONS = ("fp32", "int8")
MODEL_JSON = "model.json"
TRITON_MAX_BATCH = 64
_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
_TRITON_BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class ExportReport:
    folder: Path  # the folder holding model.json
    files: list[Path]  # every file written, model.json included


def model_name(spec: ModelSpec) -> str:
    """The model's name as a Triton model name and a file name: a bundle's name is its path."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", spec.name).strip("_") or "model"


def check_export(format: str, precision: str) -> None:
    """Refuse, before any work, what cannot be exported."""
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of: {', '.join(PRECISIONS)}")
    if format == "onnx" and precision == "int8":
        raise UsageError("int8 exports as OpenVINO (NNCF's quantized model): use --format openvino")
    if format == "onnx" and find_spec("onnx") is None:
        raise MissingExtraError(f"ONNX export needs the onnx package: {install_hint('onnx')}")


def export(
    model: RegisteredModel,
    format: Format,
    output: Path,
    *,
    precision: str = "fp32",
    triton: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ExportReport:
    """Write `model` in `format` (and its `model.json`) to the folder `output`."""
    check_export(format, precision)
    _check_output(output, overwrite=overwrite)
    name = model_name(model.spec)
    folder = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.export-"))
    try:
        folder.chmod(0o755)  # a folder others read (a Triton server's account), not mkdtemp's 0700
        home = folder / name if triton else folder
        files_dir = home / "1" if triton else home
        files_dir.mkdir(parents=True, exist_ok=True)
        try:
            _write_model(model, format, precision, files_dir, progress=progress)
        except ModelTranslationError as exc:
            raise UsageError(f"{model.spec.name} cannot be exported: {exc}") from None
        relative = [str((files_dir / f).relative_to(home)) for f in _FILES[format]]
        (home / MODEL_JSON).write_text(json.dumps(model_json(model.spec, format, relative[0]), indent=1))
        if triton:
            (home / "config.pbtxt").write_text(triton_config(model.spec, name, format))
            (home / "labels.txt").write_text("".join(f"{label.synset}\n" for label in model.spec.labels))
        written = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        _publish(folder, output)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    target = output / name if triton else output
    return ExportReport(target, [output / p for p in written])


def _check_output(output: Path, *, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output must be a folder: {output} is a file")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(f"{output} is not empty: choose a new folder, or add --overwrite to write into it")
    if not output.parent.is_dir():
        raise UsageError(f"--output's parent folder does not exist: {output.parent}")


def _publish(folder: Path, output: Path) -> None:
    """Move the written files into `output`: the whole folder in one rename where `output` does not
    exist, else file by file over the names written, once none of them is in the way as a link or a
    folder (so nothing is replaced when one is)."""
    if not output.exists():
        os.rename(folder, output)
        return
    moves = [(source, output / source.relative_to(folder)) for source in sorted(folder.rglob("*"))]
    for source, target in moves:
        same_kind = target.is_dir() if source.is_dir() else target.is_file()
        if target.is_symlink() or (target.exists() and not same_kind):
            raise UsageError(f"{target} is in the way of what this export writes (a link, or another kind)")
    for source, target in moves:
        if source.is_dir():
            target.mkdir(exist_ok=True)
        else:
            os.replace(source, target)


def _write_model(
    model: RegisteredModel, format: Format, precision: str, folder: Path, *, progress: bool
) -> None:
    if format == "onnx":
        _write_onnx(model, folder, progress=progress)
    else:
        _write_openvino(model, precision, folder, progress=progress)


def _write_onnx(model: RegisteredModel, folder: Path, *, progress: bool) -> None:
    import onnx

    from imagenet_zoo.engines.network import network_graph
    from imagenet_zoo.export.onnx_graph import onnx_model

    graph = network_graph(model, EngineRequest(progress=progress))
    scaling = normalization(model.spec.data_config.mode)
    proto = onnx_model(graph, scaling, name=model_name(model.spec), classes=model.spec.num_classes)
    onnx.save(proto, str(folder / "model.onnx"))


def _write_openvino(model: RegisteredModel, precision: str, folder: Path, *, progress: bool) -> None:
    """The OpenVINO engine's own model for `precision` (int8: the one `quantize` made), which takes
    uint8 pixels, with the softmax after it."""
    import openvino

    from imagenet_zoo.export.openvino_model import probabilities_model

    engine = get_engine("openvino")
    engine.check_installed()
    assert engine.prepare is not None
    xml = Path(str(engine.prepare(model, EngineRequest(precision=precision, progress=progress))))
    ov_model = probabilities_model(openvino.Core().read_model(str(xml)), name=model_name(model.spec))
    openvino.save_model(ov_model, str(folder / "model.xml"), compress_to_fp16=False)


def model_json(spec: ModelSpec, format: Format, file: str) -> dict[str, Any]:
    """How to feed the exported model: its file, input, the resize before it, output and classes."""
    config, size = spec.data_config, spec.data_config.input_size
    resize: dict[str, Any] = {"mode": config.resize_mode}
    if config.resize_mode == "crop":
        resize["shorter_side"] = config.resize_shorter_to
    resize["interpolation"] = config.interpolation
    return {
        "model": spec.name,
        "format": format,
        "file": file,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [-1, size, size, 3]},
        "resize": resize,
        "output": {"name": OUTPUT_NAME, "kind": "probabilities"},
        "classes": [label.synset for label in spec.labels],
    }


def triton_config(spec: ModelSpec, name: str, format: Format) -> str:
    """Triton's model configuration (protobuf text format): dynamic batching up to `TRITON_MAX_BATCH`."""
    size = spec.data_config.input_size
    lines = [
        f'name: "{name}"',
        f'backend: "{_TRITON_BACKENDS[format]}"',
        f"max_batch_size: {TRITON_MAX_BATCH}",
        f'input [{{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [ {size}, {size}, 3 ] }}]',
        f'output [{{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {spec.num_classes} ] '
        'label_filename: "labels.txt" }]',
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
    ]
    if format == "openvino":  # the OpenVINO backend runs on CPUs
        lines.append("instance_group [{ kind: KIND_CPU }]")
    return "\n".join(lines) + "\n"

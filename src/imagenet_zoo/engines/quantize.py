"""int8 post-training quantization (NNCF) of a model's OpenVINO IR, calibrated on the user's photos.

Calibration images go through exactly the preprocessing the model uses at inference, so the activation
ranges NNCF measures are the ones the quantized model will see.
"""

from __future__ import annotations

import logging
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from imagenet_zoo.data.images import DEFAULT_MAX_PIXELS, find_images
from imagenet_zoo.data.preprocess import model_input
from imagenet_zoo.engines.openvino_ir import IR_FILE, convert_to_ir, ir_dir, write_ir
from imagenet_zoo.engines.registry import DEFAULT_CALIBRATION_SAMPLES, CalibrationReport
from imagenet_zoo.errors import ImageError, MissingExtraError, UsageError, install_hint
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.weights.download import exclusive_lock

QUANTIZE_EXTRA = "quantize"  # the extra that installs NNCF


def calibration_batches(
    model: RegisteredModel, folder: Path, samples: int
) -> tuple[list[np.ndarray], list[str]]:
    """Up to `samples` preprocessed inputs (1, H, W, 3) from `folder`; unreadable files are skipped."""
    if not folder.is_dir():
        raise UsageError(f"--calibration must be a folder of photos: {folder}")
    inputs: list[np.ndarray] = []
    skipped: list[str] = []
    for path in find_images([str(folder)]):
        if len(inputs) == samples:
            break
        try:
            _, pixels = model_input(path, model.spec.data_config, max_pixels=DEFAULT_MAX_PIXELS)
        except ImageError:
            skipped.append(path)
            continue
        inputs.append(pixels[None])
    if not inputs:
        raise UsageError(f"no usable photos in {folder} to calibrate with")
    return inputs, skipped


def quantize(
    model: RegisteredModel,
    calibration: Path,
    *,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    progress: bool = True,
    random_weights: bool = False,
) -> CalibrationReport:
    """Quantize the model's fp32 IR to int8 and cache it where `--precision int8` looks for it."""
    if find_spec("nncf") is None:
        raise MissingExtraError(f"int8 quantization needs NNCF: {install_hint(QUANTIZE_EXTRA)}")
    import nncf
    import openvino

    inputs, skipped = calibration_batches(model, calibration, samples)
    fp32_xml = convert_to_ir(model, progress=progress, random_weights=random_weights)
    fp32 = openvino.Core().read_model(str(fp32_xml))
    nncf.set_log_level(logging.ERROR)
    quantized = nncf.quantize(
        fp32,
        nncf.Dataset(inputs),
        subset_size=len(inputs),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        fast_bias_correction=True,
    )
    dest = ir_dir(model, "int8", random_weights=random_weights)
    meta = {"model": model.spec.name, "calibration": str(calibration), "samples": len(inputs)}
    with exclusive_lock(dest):  # as conversion does: one writer at a time, readers see whole versions
        write_ir(quantized, dest, meta)
    return CalibrationReport(model.spec.name, dest / IR_FILE, len(inputs), skipped)

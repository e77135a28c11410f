"""The OpenVINO engine's model (fp32, or int8 from `quantize`) taking uint8 pixels and giving probabilities:
the scaling the weights expect put before its input, a softmax after its logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from imagenet_zoo.data.preprocess import Normalization
from imagenet_zoo.errors import ModelTranslationError
from imagenet_zoo.export.contract import INPUT_NAME, OUTPUT_NAME


def uint8_model(model: Any, scaling: Normalization, *, name: str) -> Any:
    """`model` (NHWC float32 pixels in, logits among its outputs) behind uint8 NHWC RGB pixels, with
    the logits' softmax as its one output."""
    [pixels] = model.get_parameters()
    shape = pixels.get_partial_shape()
    if shape.rank.get_length() != 4 or not all(shape[i].is_static for i in (1, 2, 3)):
        raise ModelTranslationError("only a network with one fixed-size image input exports")
    logits = [r for r in model.get_results() if r.get_output_partial_shape(0).rank.get_length() == 2]
    if len(logits) != 1:
        raise ModelTranslationError("only a network with one (rows, classes) output exports")
    new_shape = ov.PartialShape([-1, *(shape[i].get_length() for i in (1, 2, 3))])
    raw = ops.parameter(new_shape, ov.Type.u8, name=INPUT_NAME)
    raw.output(0).get_tensor().set_names({INPUT_NAME})
    x: Any = ops.convert(raw, ov.Type.f32)
    if scaling.channels != (0, 1, 2):
        x = ops.gather(x, ops.constant(np.array(scaling.channels, np.int64)), ops.constant(np.int64(3)))
    x = ops.divide(ops.subtract(x, ops.constant(scaling.mean)), ops.constant(scaling.std))
    for target in pixels.output(0).get_target_inputs():
        target.replace_source_output(x.output(0))
    probabilities = ops.softmax(logits[0].input_value(0), 1)
    probabilities.output(0).get_tensor().set_names({OUTPUT_NAME})
    return ov.Model([ops.result(probabilities)], [raw], name)

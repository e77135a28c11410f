"""The OpenVINO engine's model (fp32, or int8 from `quantize`) giving probabilities: it takes uint8 pixels
already (`engines.openvino_graph.build_model` with the scaling); a softmax goes after its logits."""

from __future__ import annotations

from typing import Any

import openvino as ov
import openvino.opset13 as ops

from imagenet_zoo.errors import ModelTranslationError
from imagenet_zoo.export.contract import INPUT_NAME, OUTPUT_NAME


def probabilities_model(model: Any, *, name: str) -> Any:
    """`model` (uint8 NHWC RGB pixels in, logits among its outputs) with the logits' softmax as its one
    output."""
    [pixels] = model.get_parameters()
    if pixels.get_element_type() != ov.Type.u8 or INPUT_NAME not in pixels.output(0).get_names():
        raise ModelTranslationError(f"the engine's model does not take uint8 {INPUT_NAME!r}: rebuild it")
    logits = [r for r in model.get_results() if r.get_output_partial_shape(0).rank.get_length() == 2]
    if len(logits) != 1:
        raise ModelTranslationError("only a network with one (rows, classes) output exports")
    probabilities = ops.softmax(logits[0].input_value(0), 1)
    probabilities.output(0).get_tensor().set_names({OUTPUT_NAME})
    return ov.Model([ops.result(probabilities)], [pixels], name)

"""The GPU engine: PyTorch running the model's graph (`graph.py`, `network.network_graph`), on an NVIDIA
GPU or the CPU.

The graph is made once per model and variant and is cached in
`$IMAGENET_ZOO_HOME/torch/` as a JSON graph and a safetensors file (no pickle), their SHA-256 recorded,
published by one rename, written under a lock (`engines.cache`). Later runs load the cached graph with
torch alone: neither Keras, TensorFlow nor OpenVINO is imported.

Precisions: fp32 (TF32 off, so the GPU computes what the reference computes), bf16 (GPU, or a CPU with
native bf16) and fp16 (GPU). int8 stays with the OpenVINO engine. In bf16 and fp16 the network runs in
that precision up to its last convolution and in float32 after it, and a photo whose two best classes are
closer than that precision can tell apart is computed again in float32 (`CLOSE_CALL_MARGIN`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.data.images import DecodeMode
from imagenet_zoo.data.preprocess import BatchPreprocessor, CpuPath, Normalization, normalization
from imagenet_zoo.engines.base import Engine, pixel_batch
from imagenet_zoo.engines.cache import check_recorded, folder_name, resolved_file, write_recorded
from imagenet_zoo.engines.cpu import native_bf16
from imagenet_zoo.engines.explain import class_maps, explaining_graph
from imagenet_zoo.engines.network import network_graph
from imagenet_zoo.engines.registry import EngineRequest, EngineSpec
from imagenet_zoo.explain import ClassChoice, explained_classes
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import DataConfig, ExplainMethod
from imagenet_zoo.weights.download import exclusive_lock
from imagenet_zoo.weights.store import cache_dir

GRAPH_FILE = "graph.json"
WEIGHTS_FILE = "weights.safetensors"
HEAD_FILE = "cam_head.npy"
# Part of every cached graph's key: raised when the translation changes in a way that invalidates them.
_TRANSLATION_VERSION = 1
PRECISIONS = ("fp32", "bf16", "fp16")
# A photo whose two best logits are closer than this is computed again in float32: the top-1 then is the
# reference's. With the classifier in float32, the most bf16 moved that gap on Lite0's real weights was
# 0.53 (the 200 shared photos and their mirror images; 95 % of photos under 0.27), fp16 0.05. bf16 alone
# changed 6 of the 200 top-1s, each a gap under 0.25; the margin below re-computes 12-14 % of photos.
CLOSE_CALL_MARGIN = {"fp32": 0.0, "bf16": 0.75, "fp16": 0.1}


@cache
def import_torch() -> Any:
    """torch, imported when a model is loaded, and set to compute fp32 in full fp32 (no TF32)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def cuda_available() -> bool:
    """Whether torch is installed and sees an NVIDIA GPU (imports torch only if it is installed)."""
    from importlib.util import find_spec

    return find_spec("torch") is not None and bool(import_torch().cuda.is_available())


def _variant(request: EngineRequest, method: ExplainMethod) -> str:
    variant = "random" if request.random_weights else "pretrained"
    variant += "-features" if request.task == "features" else ""
    return variant + (f"-{method}" if request.explain else "")


def graph_dir(model: RegisteredModel, request: EngineRequest) -> Path:
    """The cache folder of a model's translated graph for what `request` asks (logits, features, or
    logits with the last feature map for heatmaps)."""
    spec = model.spec
    key = [
        _TRANSLATION_VERSION,
        "random" if request.random_weights else spec.weights.hash,
        repr(spec.data_config),
        spec.num_classes,
    ]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    return (
        cache_dir() / "torch" / folder_name(spec.name) / f"{digest}-{_variant(request, spec.explain_method)}"
    )


def translated(model: RegisteredModel, request: EngineRequest) -> Path:
    """The folder of the model's translated graph, made now if not cached."""
    dest = graph_dir(model, request)
    with exclusive_lock(dest):
        if not (dest / GRAPH_FILE).is_file():
            _translate_into(dest, model, request)
    return dest


def _translate_into(dest: Path, model: RegisteredModel, request: EngineRequest) -> None:
    from safetensors.numpy import save_file

    graph, head = network_graph(model, request), None
    if request.explain:
        method = model.spec.explain_method or "grad-cam"
        graph, head = explaining_graph(graph, method, model.spec.name)

    def write(folder: Path) -> None:
        (folder / GRAPH_FILE).write_text(json.dumps(graph.spec))
        save_file(graph.weights, str(folder / WEIGHTS_FILE))
        if head is not None:
            np.save(folder / HEAD_FILE, head, allow_pickle=False)

    meta = {
        "model": model.spec.name,
        "weights_hash": None if request.random_weights else model.spec.weights.hash,
    }
    write_recorded(dest, write, meta)


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class TorchEngine(Engine):
    """A translated graph on a torch device. Calls from several threads take turns: on the CPU every
    core already works on each call, and on the GPU one stream runs them in order anyway.

    It takes `module` (a `GraphModule` in float32, `translated_graph`) as its own: moved to the device and
    lowered to `precision` in place. `close_call_margin` > 0 (bf16 or fp16, `check_close_calls`): rows
    whose two best logits are closer are computed again by `reference`, the float32 graph (`_rechecked`);
    `close_calls` counts them."""

    name = "torch"
    ranks_where_it_infers = True

    def __init__(
        self,
        module: Any,
        precision: str,
        device: str,
        scaling: Normalization,
        *,
        check_close_calls: bool = True,
    ) -> None:
        torch = import_torch()
        self.precision, self.device = precision, torch.device(device)
        self.scaling = _DeviceScaling(scaling, self.device)
        self.dtype = getattr(torch, _DTYPES[precision])
        module = module.to(self.device)
        self.close_call_margin = CLOSE_CALL_MARGIN[precision] if check_close_calls else 0.0
        self.close_calls = 0
        self.reference = _prepared(copy.deepcopy(module)) if self.close_call_margin else None
        self.module = _prepared(module.lower_precision(self.dtype) if precision != "fp32" else module)
        self._turn = threading.Lock()

    def batch_preprocessor(
        self, config: DataConfig, *, decode: DecodeMode, max_pixels: int, cpu_path: CpuPath
    ) -> BatchPreprocessor | None:
        """Decoding and preprocessing on the GPU for this engine's batches (None on the CPU, where
        Pillow's per-photo threads are the faster path)."""
        from imagenet_zoo.engines.torch_device import DevicePreprocessor

        if self.device.type != "cuda":
            return None
        return DevicePreprocessor(
            config, self.device, decode=decode, max_pixels=max_pixels, cpu_path=cpu_path
        )

    def stacked(self, rows: list[Any]) -> Any:
        """Numpy rows (HWC) as a numpy batch; a device preprocessor's rows (CHW, on the device) as one
        tensor there, with any numpy rows among them moved there (the service batches both kinds)."""
        if all(isinstance(row, np.ndarray) for row in rows):
            return np.stack(rows)
        torch = import_torch()
        tensors = [
            row if isinstance(row, torch.Tensor) else torch.from_numpy(row).permute(2, 0, 1).to(self.device)
            for row in rows
        ]
        return torch.stack(tensors).contiguous(memory_format=torch.channels_last)

    def to_device(self, batch: Any) -> Any:
        """A batch of pixels (uint8: NHWC numpy, or a `DevicePreprocessor`'s NCHW tensor) as the model's
        float32 input: scaled as the weights expect, NCHW in channels-last memory, on the device. Only
        the uint8 pixels cross to the device."""
        torch = import_torch()
        if isinstance(batch, torch.Tensor):
            return self.scaling(batch.to(self.device))
        pixels = torch.from_numpy(pixel_batch(batch))
        pixels = pixels.to(self.device, non_blocking=True) if self.device.type != "cpu" else pixels
        return self.scaling(pixels.permute(0, 3, 1, 2))

    def run(self, x: Any) -> list[Any]:
        """The graph on a float32 model-input tensor on the device: its outputs, on the device."""
        torch = import_torch()
        with torch.inference_mode():
            return self._rechecked(x, lambda module, x, rows: list(module(x)))

    def _rechecked(self, x: Any, compute: Callable[[Any, Any, Any], list[Any]]) -> list[Any]:
        """`compute(module, x, rows)`: outputs (tensors or numpy arrays), the logits (rows, classes) among
        them, of the graph in this engine's precision (`rows` None), and for the close calls of the
        float32 graph (`rows`: their indices, `x` those rows), which replace theirs."""
        with self._turn:
            outputs = compute(self.module, x.to(self.dtype), None)
            if self.reference is None:
                return outputs
            logits = next(y for y in outputs if y.ndim == 2)
            rows = close_call_rows(_tensor(logits), self.close_call_margin)
            if len(rows) == 0:
                return outputs
            self.close_calls += len(rows)
            exact = compute(self.reference, x[rows], rows)
            return [_with_rows(whole, rows, part) for whole, part in zip(outputs, exact, strict=True)]

    def _logits(self, batch: Any) -> Any:
        """The graph's (rows, classes) output, on the device: a heatmap graph's feature map stays there."""
        return _logits_of(self.run(self.to_device(batch)))

    def infer(self, batch: Any) -> np.ndarray:
        return self._logits(batch).float().cpu().numpy()  # type: ignore[no-any-return]

    def infer_top(self, batch: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ranked where the logits are: only (rows, k) values leave the GPU. Softmax in float32 and a stable
        sort, as the CPU's post-processing computes them (equal probabilities rank the lower index first)."""
        torch = import_torch()
        logits = self._logits(batch)
        probabilities = torch.softmax(logits.float(), dim=1)
        ranked, order = torch.sort(probabilities, dim=1, descending=True, stable=True)
        return order[:, :k].cpu().numpy(), ranked[:, :k].cpu().numpy()


class TorchCamEngine(TorchEngine):
    """CAM (`explain.class_maps`) from the graph's logits and last feature map, one forward pass."""

    explain_method: ExplainMethod = "cam"

    def __init__(self, *args: Any, head: np.ndarray | None, **kwargs: Any) -> None:
        """`TorchEngine`'s arguments, and the classifier's weights the maps are made with (None: the
        model's own last dense layer is the graph's)."""
        super().__init__(*args, **kwargs)
        self.head = head

    def explain(self, batch: Any, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outputs = [y.float().cpu().numpy() for y in self.run(self.to_device(batch))]
        logits = next(y for y in outputs if y.ndim == 2)
        features = next(y for y in outputs if y.ndim == 4)
        return class_maps(logits, features, self.head, choice)


class TorchGradCamEngine(TorchEngine):
    """A graph with logits and the last feature map as outputs; the heatmap weights each feature channel
    by the mean gradient of the class's logit, which torch computes."""

    explain_method: ExplainMethod = "grad-cam"

    def explain(self, batch: Any, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, maps and explained classes; in bf16 or fp16, the close calls' from the float32 graph."""

        def grad_cam(module: Any, x: Any, rows: Any) -> list[Any]:
            subset = rows is not None and isinstance(choice, Sequence)
            chosen = [choice[i] for i in rows.tolist()] if subset else choice  # type: ignore[index]
            return list(_grad_cam(module, x, chosen))

        logits, maps, classes = self._rechecked(self.to_device(batch), grad_cam)
        return logits, maps, classes


def _grad_cam(module: Any, x: Any, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, Grad-CAM maps and the classes they explain: each feature channel weighted by the mean
    gradient of the class's logit."""
    torch = import_torch()
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits, features = module(x, keras_layout=False)
        classes = explained_classes(logits.detach().float().cpu().numpy(), choice)
        chosen = torch.as_tensor(classes, device=logits.device)
        evidence = logits.gather(1, chosen[:, None]).sum()
        (gradients,) = torch.autograd.grad(evidence, features)
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # NCHW: per channel
    maps = (weights * features.detach().float()).sum(dim=1)
    return logits.detach().float().cpu().numpy(), maps.cpu().numpy(), classes


class _DeviceScaling:
    """`Normalization` on the device: NCHW pixels in [0, 255] (any dtype) to float32 (x - mean) / std,
    channels in the weights' order, in channels-last memory."""

    def __init__(self, scaling: Normalization, device: Any) -> None:
        torch = import_torch()
        self.channels = list(scaling.channels) if scaling.channels != (0, 1, 2) else None
        self.mean = torch.tensor(scaling.mean, device=device).reshape(1, 3, 1, 1)
        self.std = torch.tensor(scaling.std, device=device).reshape(1, 3, 1, 1)

    def __call__(self, pixels: Any) -> Any:
        x = pixels.float()
        if self.channels is not None:
            x = x[:, self.channels]
        return ((x - self.mean) / self.std).contiguous(memory_format=import_torch().channels_last)


def _prepared(module: Any) -> Any:
    torch = import_torch()
    return module.to(memory_format=torch.channels_last).eval()


def _logits_of(outputs: list[Any]) -> Any:
    return next(y for y in outputs if y.dim() == 2)


def _tensor(values: Any) -> Any:
    """A tensor of `values` (numpy arrays are shared, not copied)."""
    torch = import_torch()
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(values)


def _with_rows(whole: Any, rows: Any, part: Any) -> Any:
    """`whole` with its `rows` replaced by `part`'s: a float32 tensor, or a numpy array (copied)."""
    torch = import_torch()
    if isinstance(whole, torch.Tensor):
        return whole.float().index_copy(0, rows, part.float())
    replaced = whole.copy()
    replaced[rows.cpu().numpy()] = part
    return replaced


def close_call_rows(logits: Any, margin: float) -> Any:
    """The indices of the rows whose two best logits are less than `margin` apart, or that hold a value
    that is not finite (bf16 or fp16 overflowed: inf - inf is NaN, never "closer than the margin"), as a
    device tensor."""
    torch = import_torch()
    values = logits.float()
    overflowed = ~torch.isfinite(values).all(dim=1)
    if values.shape[1] < 2:
        return torch.nonzero(overflowed)[:, 0]
    best = values.topk(2, dim=1).values
    return torch.nonzero((best[:, 0] - best[:, 1] < margin) | overflowed)[:, 0]


def load(model: RegisteredModel, request: EngineRequest) -> Engine:
    module, head = translated_graph(translated(model, request), request.device, threads=request.threads)
    scaling = normalization(model.spec.data_config.mode)
    # Features rank nothing; random weights (benchmarks) have no answers to protect, and their logits are
    # all close calls (32 of 32 noise inputs for a random ResNet50).
    checked = request.task == "classify" and not request.random_weights
    arguments = (module, request.precision, request.device, scaling)
    if not request.explain:
        return TorchEngine(*arguments, check_close_calls=checked)
    if model.spec.explain_method == "cam":
        return TorchCamEngine(*arguments, head=head, check_close_calls=checked)
    return TorchGradCamEngine(*arguments, check_close_calls=checked)


def translated_graph(
    folder: Path, device: str, *, threads: int | None = None
) -> tuple[Any, np.ndarray | None]:
    """The cached graph's module (float32, on the CPU) and a CAM graph's head, every file from one version
    of the folder and as recorded."""
    from safetensors.torch import load_file

    from imagenet_zoo.engines.torch_graph import GraphModule

    folder = resolved_file(folder, ".")
    check_recorded(folder, (GRAPH_FILE, WEIGHTS_FILE))
    if threads and device == "cpu":  # a share of the machine (a Ray actor's CPUs)
        import_torch().set_num_threads(threads)
    spec = json.loads((folder / GRAPH_FILE).read_text())
    module = GraphModule(spec, load_file(str(folder / WEIGHTS_FILE)))
    head = folder / HEAD_FILE
    return module, np.load(head, allow_pickle=False) if head.is_file() else None


def _unavailable(precision: str, device: str) -> str | None:
    if precision == "fp16" and device == "cpu":
        return "fp16 runs on the GPU only (--device cuda); on the CPU use fp32 or bf16"
    if precision == "bf16" and device == "cpu" and not native_bf16():
        # Emulated, it is no bargain: about 8x slower than fp32 (docs/benchmarks.md, "Figures behind
        # constants").
        return "bf16 on the CPU needs native bf16 (AVX512_BF16 or AMX), else it is 8x slower than fp32"
    return None


def _device_available(device: str) -> bool:
    return device == "cpu" or (device == "cuda" and cuda_available())


ENGINE = EngineSpec(
    name="torch",
    summary="torch (NVIDIA GPUs, or the CPU; its graph made once and cached): fp32, bf16, fp16",
    load=load,
    requires=("torch", "safetensors"),
    extra="cuda",
    precisions=PRECISIONS,
    devices=("cuda", "cpu"),
    explain_methods=frozenset({"cam", "grad-cam"}),
    explain_precisions=PRECISIONS,
    prepare=translated,
    converted=lambda model, request: (graph_dir(model, request) / GRAPH_FILE).is_file(),
    unavailable=_unavailable,
    device_available=_device_available,
)

"""The public API is pinned: growing or shrinking it is a decision made here, and all of it is typed.
A user of `create_model` / `load` can finish the job (transform, post-processing, labels) without private
imports."""

import inspect
import subprocess
import sys
import typing
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagenet_zoo

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_API = {
    "DEFAULT_MODEL", "ClassLabel", "Classification", "Classifier", "CorruptImageError", "DataConfig",
    "EmptyImageError", "Engine", "ErrorInfo", "Explanation",
    "ExplanationUnsupportedError", "FeatureExtractor", "FeatureSet", "GroupScore", "Hierarchy",
    "ImageError",
    "ImageNotFoundError", "ImageTooLargeError", "ImagenetZooError", "InputInfo", "ModelSpec", "Prediction",
    "RegisteredModel", "Registry", "Synset", "Transform", "UnknownModelError", "UnsupportedImageError",
    "UsageError",
    "WeightsError", "WeightsFile", "WeightsFormatError", "WeightsIntegrityError", "WeightsUnavailableError",
    "__version__", "create_model", "create_transform", "decode_image", "decode_predictions",
    "draw_heatmap",
    "extract_features", "get_model_spec", "imagenet1k", "list_models", "load", "load_engine", "preprocess",
    "resolve_data_config", "resolve_model", "wordnet",
    # The pipeline's seam and its two configurations; engines as configuration (one module, one registration).
    "Pipeline", "LoadConfig", "PostOptions", "load_pipeline", "EngineSpec", "EngineRequest",
    "engine_registry", "register_engine",
}  # fmt: skip


def test_the_exported_names_are_exactly_the_public_api() -> None:
    assert set(imagenet_zoo.__all__) == PUBLIC_API
    assert all(hasattr(imagenet_zoo, name) for name in PUBLIC_API)
    assert imagenet_zoo.__version__ and imagenet_zoo.DEFAULT_MODEL in imagenet_zoo.list_models()


def _untyped(function: typing.Callable[..., object]) -> list[str]:
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function)
    missing = [
        p for p in signature.parameters if p not in ("self", "cls", "args", "kwargs") and p not in hints
    ]
    return missing + ([] if "return" in hints or function.__name__ == "__init__" else ["return"])


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_every_public_name_has_type_hints(name: str) -> None:
    obj = getattr(imagenet_zoo, name)
    if inspect.isfunction(obj):
        assert _untyped(obj) == [], f"{name} lacks hints"
    elif inspect.isclass(obj) and not issubclass(obj, Exception):
        methods = [m for n, m in inspect.getmembers(obj, inspect.isfunction) if not n.startswith("_")]
        if "__init__" in vars(obj) and obj.__init__.__qualname__.startswith(obj.__name__):
            methods.append(obj.__init__)
        for method in methods:
            assert _untyped(method) == [], f"{name}.{method.__name__} lacks hints"
        if not methods:  # a plain record: its fields are annotated
            assert typing.get_type_hints(obj), f"{name} has no annotated fields"


def test_importing_the_package_is_light_and_the_layout_has_no_circle() -> None:
    """scripts/check_layout.py: no jobs/transfer/server or Keras/OpenVINO on `import imagenet_zoo`, no import
    circle, no lower layer importing an upper one."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layout.py")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "layout ok" in run.stdout


def test_the_layout_check_finds_a_circle() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_layout
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert check_layout.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert check_layout.layering_problems({"imagenet_zoo.api": {"imagenet_zoo.jobs.folder"}}) == [
        "a lower layer imports an upper one: imagenet_zoo.api imports imagenet_zoo.jobs.folder"
    ]


def test_the_layout_check_finds_torch_outside_its_engine(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_layout
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    package = tmp_path / "imagenet_zoo"
    (package / "engines").mkdir(parents=True)
    (package / "pipeline.py").write_text("def stacked(rows):\n    import torch\n")
    (package / "engines" / "torch_device.py").write_text("import torchvision.io\n")
    (package / "engines" / "openvino.py").write_text("from torch import nn\n")
    found = check_layout.torch_importers(package)
    assert found == ["imagenet_zoo.engines.openvino", "imagenet_zoo.pipeline"]


def test_a_model_user_finishes_the_job_with_public_names_only(with_lite0: Path) -> None:
    """create_model -> transform -> logits -> decode_predictions, as a Keras or timm user would."""
    spec = imagenet_zoo.get_model_spec("lite0")
    assert len(spec.labels) == spec.num_classes == 1000 and spec.labels[0].name == "tench"
    transform = imagenet_zoo.create_transform(imagenet_zoo.resolve_data_config("lite0"))
    photo = Image.open(Path(str(files("imagenet_zoo.selftest").joinpath("coffee.png"))))
    pixels = transform(photo.convert("RGB"))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    model = imagenet_zoo.create_model("lite0", progress=False)
    logits = np.asarray(model.predict(pixels[None], verbose=0))
    [top] = imagenet_zoo.decode_predictions(logits, top=3, labels=spec.labels)
    expected = imagenet_zoo.load("lite0", engine="keras", decode="full").classify(photo, top=3)
    assert [p.label for p in top] == [p.label for p in expected.predictions]
    np.testing.assert_allclose([p.score for p in top], [p.score for p in expected.predictions], atol=1e-5)


def test_features_true_gives_a_feature_extractor(with_lite0: Path) -> None:
    extractor = imagenet_zoo.load("lite0", features=True)
    assert isinstance(extractor, imagenet_zoo.FeatureExtractor) and not hasattr(extractor, "classify")
    photo = Image.new("RGB", (300, 200), (200, 30, 30))
    feature_set = extractor.extract([photo, b"not an image"])
    assert feature_set.features.shape == (1, 1280) and [p for p, _ in feature_set.failures] == ["<bytes>"]
    again = imagenet_zoo.extract_features([photo], "lite0")
    np.testing.assert_allclose(again.features, feature_set.features, atol=1e-6)


@pytest.mark.parametrize(
    "edge",
    [
        (
            "imagenet_zoo.api",
            "imagenet_zoo.transfer.bundles",
        ),  # a model source loaded from the training package
        ("imagenet_zoo.engines.quantize", "imagenet_zoo.classifier"),  # an engine above the pipeline
        ("imagenet_zoo.server.service", "imagenet_zoo.engines.openvino"),  # an engine past the registry
        ("imagenet_zoo.jobs.cluster", "imagenet_zoo.transfer.features"),  # one application into another
    ],
)
def test_the_layout_check_refuses_the_edges_that_tangled_the_layers(edge: tuple[str, str]) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_layout
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    importer, imported = edge
    assert len(check_layout.layering_problems({importer: {imported}})) == 1

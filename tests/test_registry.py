"""Names that cannot collide: bundles are resolved by path, never registered; the registry never replaces."""

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import imagenet_zoo
from imagenet_zoo import Registry, list_models, resolve_model
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.registry import default_registry
from imagenet_zoo.server import Settings, create_app
from tests.conftest import run_cli
from tests.fakes import constant_bundle


@pytest.fixture(scope="module")
def twin_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("twins")
    return constant_bundle(root / "a" / "model", "dog"), constant_bundle(root / "b" / "model", "other")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "grey.png"
    Image.new("RGB", (64, 48), (120, 120, 120)).save(path)
    return path


def test_two_bundles_with_the_same_folder_name_in_one_compare(
    twin_bundles: tuple[Path, Path], photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = twin_bundles
    argv = ["compare", str(photo), "--models", f"{a},{b}", "--engine", "keras", "--format", "json"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    answers = {
        answer["model"]: answer["predictions"][0]["label"]
        for answer in json.loads(out)["photos"][0]["answers"]
    }
    assert answers == {str(a): "dog", str(b): "other"}
    assert list_models() == [m.spec.name for m in default_registry()] and str(a) not in default_registry()


def test_a_bundle_folder_named_like_a_zoo_model(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = constant_bundle(tmp_path / "resnet50", "dog")
    before = list_models()
    argv = ["classify", str(photo), "--model", str(impostor), "--engine", "keras", "--format", "json"]
    code, out, _ = run_cli(argv, capsys)
    [result] = json.loads(out)
    assert code == 0 and result["model"] == str(impostor) and result["predictions"][0]["label"] == "dog"
    assert list_models() == before and resolve_model("resnet50").spec.family == "resnet"
    # In the folder's parent, the bare name is still the zoo's; `./resnet50` is the folder.
    monkeypatch.chdir(tmp_path)
    assert resolve_model("resnet50").spec.num_classes == 1000
    assert resolve_model("./resnet50").spec.name == os.path.join(".", "resnet50")
    assert resolve_model("./resnet50").spec.labels[0].name == "dog"


def test_both_bundles_in_one_server(twin_bundles: tuple[Path, Path], photo: Path) -> None:
    a, b = twin_bundles
    settings = Settings(models=(str(a), str(b)), load=LoadConfig(engine="keras"))
    with TestClient(create_app(settings)) as client:
        assert [m["name"] for m in client.get("/v1/models").json()] == [str(a), str(b)]
        for bundle, label in ((a, "dog"), (b, "other")):
            files = {"file": ("grey.png", photo.read_bytes(), "image/png")}
            response = client.post("/v1/classify", params={"model": str(bundle)}, files=files)
            assert response.status_code == 200
            assert response.json()["model"] == str(bundle)
            assert response.json()["predictions"][0]["label"] == label


def test_the_registry_never_replaces_a_name() -> None:
    zoo = list(default_registry())
    registry = Registry(zoo[:2])
    with pytest.raises(ValueError, match="already names"):
        registry.register(zoo[0])
    with pytest.raises(ValueError, match="already names"):  # an alias is a name too
        registry.register(
            imagenet_zoo.RegisteredModel(
                imagenet_zoo.ModelSpec(**{**zoo[1].spec.__dict__, "name": "other", "aliases": ("lite0",)}),
                zoo[1].build,
                zoo[1].weights,
            )
        )
    assert registry.names() == [m.spec.name for m in zoo[:2]]


def test_list_models_filters_like_timm() -> None:
    assert list_models("vgg*") == ["vgg16", "vgg19"]
    assert list_models("*net*") == [n for n in list_models() if "net" in n]
    assert list_models("nothing*") == []

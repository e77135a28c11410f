"""The Open Inference Protocol (KServe v2) as NVIDIA's own client speaks it: tritonclient[http] from PyPI,
with its default settings (binary tensors), against a real server on loopback."""

import base64
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from imagenet_zoo.server import Settings
from tests.conftest import SAMPLE_DIR, running_app
from tests.test_serve_process import free_port

PHOTOS = sorted(SAMPLE_DIR.glob("*.JPEG"))[::25]  # 8 photos of 8 classes
MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def server_url(lite0_home: Path) -> Iterator[str]:
    import os

    os.environ["IMAGENET_ZOO_HOME"] = str(lite0_home)
    settings = replace(Settings(), api_keys=("first-key", "second-key"))
    with running_app(settings, free_port()) as url:
        yield url
    del os.environ["IMAGENET_ZOO_HOME"]


def _client(url: str, key: str = "second-key"):  # type: ignore[no-untyped-def]
    import tritonclient.http as triton

    return triton.InferenceServerClient(url=url), {"Authorization": f"Bearer {key}"}


def _images() -> np.ndarray:
    return np.array([p.read_bytes() for p in PHOTOS], dtype=np.object_)


def _v1_top5(url: str) -> list[list[int]]:
    headers = {"Authorization": "Bearer first-key"}
    answers = [
        httpx.post(f"http://{url}/v1/classify", content=p.read_bytes(), headers=headers).json()
        for p in PHOTOS
    ]
    return [[p["index"] for p in a["predictions"]] for a in answers]


def test_health_and_metadata_with_tritonclient(server_url: str) -> None:
    client, headers = _client(server_url)
    assert client.is_server_live() and client.is_server_ready()  # open: no key needed
    assert client.is_model_ready(MODEL, headers=headers)
    server = client.get_server_metadata()
    assert server["name"] == "imagenet-zoo" and "classification" in server["extensions"]
    metadata = client.get_model_metadata(MODEL, headers=headers)
    assert metadata["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["LABELS", "SCORES", "CLASS_INDICES", "PROBABILITIES"]


def test_infer_with_default_settings_matches_v1(server_url: str) -> None:
    import tritonclient.http as triton

    client, headers = _client(server_url)
    image = triton.InferInput("IMAGE", [len(PHOTOS)], "BYTES")
    image.set_data_from_numpy(_images())  # binary_data=True, tritonclient's default
    result = client.infer(MODEL, [image], headers=headers)  # no outputs named: all of them, in binary
    indices = result.as_numpy("CLASS_INDICES")
    assert indices.shape == (len(PHOTOS), 5) and indices.tolist() == _v1_top5(server_url)
    scores, labels = result.as_numpy("SCORES"), result.as_numpy("LABELS")
    assert scores.dtype == np.float32 and (np.diff(scores, axis=1) <= 0).all()
    probabilities = result.as_numpy("PROBABILITIES")
    assert probabilities.shape == (len(PHOTOS), 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(probabilities, indices, 1), scores, atol=1e-6)
    truth = [p.name.split("_", 1)[1].removesuffix(".JPEG").replace("_", " ") for p in PHOTOS]
    assert sum(label.decode() == name for label, name in zip(labels[:, 0], truth, strict=True)) >= 6


def test_classification_extension_as_image_client_reads_it(server_url: str) -> None:
    import tritonclient.http as triton

    client, headers = _client(server_url)
    image = triton.InferInput("IMAGE", [len(PHOTOS)], "BYTES")
    image.set_data_from_numpy(_images())
    wanted = triton.InferRequestedOutput("SCORES", class_count=3)
    result = client.infer(MODEL, [image], outputs=[wanted], headers=headers)
    rows = result.as_numpy("SCORES")
    assert rows.shape == (len(PHOTOS), 3)
    top5 = _v1_top5(server_url)
    for row, expected in zip(rows, top5, strict=True):
        parsed = [item.decode().split(":") for item in row]  # "score:index:label", as image_client splits it
        assert [int(index) for _, index, _ in parsed] == expected[:3]
        assert float(parsed[0][0]) >= float(parsed[1][0]) >= float(parsed[2][0])


def test_json_tensors_and_top_k(server_url: str) -> None:
    import tritonclient.http as triton

    client, headers = _client(server_url)
    image = triton.InferInput("IMAGE", [2], "BYTES")
    encoded = [base64.b64encode(p.read_bytes()) for p in PHOTOS[:2]]  # JSON BYTES: base64 text
    image.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("CLASS_INDICES", "LABELS")]
    result = client.infer(MODEL, [image], outputs=outputs, headers=headers, parameters={"top_k": 2})
    assert result.as_numpy("CLASS_INDICES").tolist() == [row[:2] for row in _v1_top5(server_url)[:2]]
    labels = result.get_output("LABELS")
    assert labels["shape"] == [2, 2] and isinstance(labels["data"][0], str)  # JSON data, not binary


def test_errors_follow_the_protocol(server_url: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client, headers = _client(server_url)
    image = triton.InferInput("IMAGE", [2], "BYTES")
    image.set_data_from_numpy(np.array([PHOTOS[0].read_bytes(), b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"IMAGE\[1\]: not an image") as broken:
        client.infer(MODEL, [image], headers=headers)
    assert broken.value.status() == "400"
    with pytest.raises(InferenceServerException, match="is not served here"):
        client.get_model_metadata("resnet9000", headers=headers)
    with pytest.raises(InferenceServerException, match="API key"):
        client.infer(MODEL, [image], headers={"Authorization": "Bearer wrong"})
    key = {"Authorization": "Bearer first-key"}  # tritonclient added its own headers to `headers`
    raw = httpx.post(f"http://{server_url}/v2/models/{MODEL}/infer", content=b"{", headers=key)
    assert raw.status_code == 400 and set(raw.json()) == {"error"}
    unauthorized = httpx.get(f"http://{server_url}/v2/models/{MODEL}")
    assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"].startswith("Bearer")
    assert "second-key" not in unauthorized.text

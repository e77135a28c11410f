"""Engines as configuration: one registration makes an engine an option everywhere; each engine declares
what it can do and owns its concurrency."""

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import imagenet_zoo
from imagenet_zoo.engines.registry import EngineRegistry, EngineSpec, engine_registry
from imagenet_zoo.errors import (
    ClusterError,
    ExplanationUnsupportedError,
    UnsupportedPrecisionError,
    UsageError,
)
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.server import Settings, create_app
from tests.conftest import SAMPLE_DIR, run_cli
from tests.fakes import FakeEngine, engine_plugin_path, fake_settings, register_fake

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted(SAMPLE_DIR.iterdir())[:4]


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The fake engine installed as another package installs an engine (an entry point), in this process
    and in the processes it starts; the environment those processes get."""
    monkeypatch.syspath_prepend(str(engine_plugin_path()))
    pythonpath = os.pathsep.join([str(engine_plugin_path()), str(ROOT), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    engine_registry.cache_clear()  # found again, as a new process finds the engines
    yield dict(os.environ)
    engine_registry.cache_clear()


def test_one_registration_makes_an_engine_an_option_everywhere(
    plugin: dict[str, str], with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fake engine is declared in one place (tests/plugins: an entry point); nothing else names it."""
    from imagenet_zoo.cli import build_parser

    assert "fake" in engine_registry().names()
    usage = build_parser().parse_args(["classify", "x.jpg", "--engine", "fake"])
    assert usage.engine == "fake"
    code, out, _ = run_cli(["classify", str(PHOTOS[0]), "--engine", "fake", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)[0]["model"] == "efficientnet_lite0"

    argv = ["bench", "--model", "lite0", "--engine", "fake", "--seconds", "0.1", "--no-cold-start",
            "--format", "json"]  # fmt: skip
    code, out, _ = run_cli(argv, capsys)  # each engine is measured in a worker process of its own
    assert code == 0 and {row["engine"] for row in json.loads(out)} == {"keras.predict", "fake"}

    code, out, _ = run_cli(["selftest"], capsys)  # the fake's answers are wrong: selftest must say so
    assert code == 1 and "efficientnet_lite0   fake      fp32      keras fp32" in out and "FAIL" in out

    with TestClient(create_app(Settings(load=LoadConfig(engine="fake")))) as client:
        [row] = client.get("/v1/models").json()
        assert row["engine"] == "fake" and row["loaded"] and not row["explain"]


@pytest.mark.slow
def test_a_plugin_engine_runs_on_the_cluster_path(
    plugin: dict[str, str], with_lite0: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    output = tmp_path / "partitions"
    command = [sys.executable, "-m", "imagenet_zoo", "classify", *map(str, PHOTOS), "--engine", "fake",
               "--cluster", "local", "--output", str(output), "--quiet"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=plugin, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    identity = json.loads((output / "_job.json").read_text())
    assert identity["engine"] == "fake" and len(list(output.glob("part-*.jsonl"))) >= 1


def test_a_gpu_engine_on_the_cluster_gets_one_actor_per_gpu(
    plugin: dict[str, str], with_lite0: Path, tmp_path: Path
) -> None:
    """Ray is told this machine has 2 GPUs: each actor asks for one (the fake engine refuses to load
    without), and the job runs where it was chosen."""
    pytest.importorskip("ray")
    output = tmp_path / "partitions"
    command = [sys.executable, "-m", "imagenet_zoo", "classify", *map(str, PHOTOS), "--engine", "fake-gpu",
               "--device", "cuda", "--cluster", "local", "--output", str(output), "--quiet"]  # fmt: skip
    env = {**plugin, "RAY_OVERRIDE_RESOURCES": json.dumps({"GPU": 2})}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert "ran on cuda with the fake-gpu engine" in run.stderr
    identity = json.loads((output / "_job.json").read_text())
    assert identity["engine"] == "fake-gpu" and len(list(output.glob("part-*.jsonl"))) >= 1


def test_actors_ask_for_what_their_device_needs() -> None:
    from imagenet_zoo.jobs.cluster import ClusterJob, actor_resources

    def job(device: str, max_actors: int | None = None) -> ClusterJob:
        return ClusterJob(sources=[], output="o", load=LoadConfig(engine="torch", device=device),
                          max_actors=max_actors)  # fmt: skip

    assert actor_resources({"CPU": 16, "GPU": 2}, job("cpu")) == (16, {"num_cpus": 1})
    assert actor_resources({"CPU": 16, "GPU": 2}, job("cuda")) == (2, {"num_gpus": 1, "num_cpus": 8})
    assert actor_resources({"CPU": 16, "GPU": 2}, job("cuda", max_actors=1))[0] == 1
    with pytest.raises(ClusterError, match="runs on cuda, and the cluster has no GPU"):
        actor_resources({"CPU": 16}, job("cuda"))


def test_a_name_is_registered_once() -> None:
    registry = EngineRegistry()
    spec = EngineSpec(name="x", summary="x", load=lambda model, request: FakeEngine())
    registry.register(spec)
    with pytest.raises(ValueError, match="never replaced"):
        registry.register(spec)
    with pytest.raises(ValueError, match="never replaced"):
        registry.register(EngineSpec(name="auto", summary="", load=spec.load))  # a device choice
    with pytest.raises(UsageError, match="unknown engine 'y'; choose one of: x"):
        registry.get("y")


def test_what_an_engine_cannot_do_is_refused_before_loading_saying_what_would(with_lite0: Path) -> None:
    with pytest.raises(
        UnsupportedPrecisionError, match="keras engine runs fp32 only; bf16 needs --engine openvino"
    ):
        imagenet_zoo.load("lite0", engine="keras", precision="bf16")
    with pytest.raises(UnsupportedPrecisionError, match="no engine has the precision fp8"):
        imagenet_zoo.load("lite0", precision="fp8")
    with pytest.raises(UsageError, match="runs on cpu, not 'cuda'; cuda needs --engine torch"):
        imagenet_zoo.load("lite0", engine="openvino", device="cuda")
    name = register_fake(FakeEngine(), features=False)
    with pytest.raises(UsageError, match="does not extract features"):
        imagenet_zoo.load("lite0", engine=name, features=True)
    with pytest.raises(ExplanationUnsupportedError, match="no class activation maps"):
        imagenet_zoo.load("lite0", engine=name, explain=True)
    assert imagenet_zoo.load("lite0", device="auto").engine.name == "openvino"  # auto: its device here


def test_auto_chooses_the_gpu_only_for_work_worth_its_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from imagenet_zoo.engines import registry

    torch_spec = registry.get_engine("torch")
    looked: list[str] = []

    def has_cuda(device: str) -> bool:  # what asking torch costs: recorded, never done for a few photos
        looked.append(device)
        return True

    monkeypatch.setitem(
        registry.engine_registry()._engines, "torch", replace(torch_spec, device_available=has_cuda)
    )
    monkeypatch.setattr(registry, "gpu_present", lambda: True)
    few = registry.choose_engine("auto", "auto", photos=registry.GPU_WORTH_PHOTOS - 1)
    assert (few.engine, few.device) == ("openvino", "cpu") and looked == []
    assert "start-up" in few.reason
    for photos in (registry.GPU_WORTH_PHOTOS, None):  # None: a service, a library user
        many = registry.choose_engine("auto", "auto", photos=photos)
        assert (many.engine, many.device) == ("torch", "cuda")
    assert registry.choose_engine("auto", "cpu", photos=None).engine == "openvino"
    assert registry.choose_engine("auto", "cuda", photos=1).engine == "torch"  # asked for: no rule
    assert registry.choose_engine("keras", "auto", photos=None) == registry.EngineChoice(
        "keras", "cpu", "as asked"
    )
    monkeypatch.setattr(registry, "gpu_present", lambda: False)
    assert registry.choose_engine("auto", "auto", photos=None).engine == "openvino"


class _Overlapping(FakeEngine):
    """Records how many calls run at once."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.2)
        self.running, self.most = 0, 0
        self._count = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().infer(batch)
        finally:
            with self._count:
                self.running -= 1


def test_an_engine_that_runs_calls_at_once_is_not_serialized_above_it() -> None:
    engine = _Overlapping()
    name = register_fake(engine)
    classifier = imagenet_zoo.load("lite0", engine=name, progress=False)
    batch = np.zeros((1, 224, 224, 3), np.uint8)
    threads = [threading.Thread(target=classifier.forward, args=(batch,)) for _ in range(4)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.most == 4 and time.monotonic() - start < 0.6  # four calls of 0.2 s side by side


def test_the_openvino_engine_takes_turns_on_its_one_request(with_lite0: Path) -> None:
    engine = imagenet_zoo.load_engine("lite0", progress=False)
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    expected = engine.infer(batch)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(engine.infer(batch))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(np.array_equal(r, expected) for r in results)


def test_the_service_runs_a_model_on_its_engine(with_lite0: Path) -> None:
    engine = FakeEngine()
    with TestClient(create_app(fake_settings(engine))) as client:
        [row] = client.get("/v1/models").json()
        assert row["engine"].startswith("fake-") and row["precision"] == "fp32"
        assert client.post("/v1/classify", content=PHOTOS[0].read_bytes()).status_code == 200
    assert engine.calls >= 2  # the warm-up and the request


def test_a_broken_plugin_is_skipped_naming_its_package(tmp_path: Path) -> None:
    """An entry point that failed to import, or registered a taken name such as `keras`, made even
    `imagenet-zoo --help` and `serve` die with a traceback."""
    info = tmp_path / "broken_engines-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-engines\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[imagenet_zoo.engines]\nmissing = no_such_module_anywhere:ENGINE\n"
        "keras = imagenet_zoo.engines.keras:ENGINE\nnot_a_spec = os:sep\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    for argv in (["--help"], ["classify", "--help"], ["models"]):
        run = subprocess.run([sys.executable, "-m", "imagenet_zoo", *argv], capture_output=True, text=True,
                             env=env, check=False)  # fmt: skip
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
        skipped = [line for line in run.stderr.splitlines() if "skipped the engine" in line]
        assert len(skipped) == 3 and all("broken-engines" in line for line in skipped), run.stderr

"""The folder job on a Ray cluster: a head and a second node on this machine, 1 CPU each, started here."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagenet_zoo.errors import ClusterError
from imagenet_zoo.jobs.cluster import ClusterJob, PartitionFolder, job_token, partition_name
from imagenet_zoo.jobs.features import load_features
from tests.conftest import SAMPLE_DIR, run_cli

ray = pytest.importorskip("ray")

# Ray itself resolves loopback to the machine's own address, so the nodes listen on that: nothing leaves it.
NODE = {"num_cpus": 1, "object_store_memory": 150 * 2**20}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    # The jobs forward IMAGENET_ZOO_HOME to their workers; nothing else of the test's cache is shared.
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 200 shared photos and one broken file."""
    folder = tmp_path_factory.mktemp("photos")
    for photo in SAMPLE_DIR.iterdir():
        (folder / photo.name).symlink_to(photo)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


def _cli(*argv: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "IMAGENET_ZOO_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "imagenet_zoo", *argv], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _run(*argv: str, home: Path) -> tuple[int, str]:
    process = _cli(*argv, home=home)
    _, err = process.communicate(timeout=300)
    return process.returncode, err


@pytest.fixture(scope="module")
def single_machine(photos: Path, lite0_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("single") / "results.jsonl"
    code, err = _run("classify", str(photos), "--output", str(output), "--quiet", home=lite0_home)
    assert code == 1, err  # the broken file
    return output


@pytest.mark.slow
def test_classify_on_the_cluster_equals_one_machine(
    cluster: Any, photos: Path, single_machine: Path, lite0_home: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results"
    code, err = _run(
        "classify", str(photos), "--cluster", cluster.address, "--output", str(output), home=lite0_home
    )
    assert (
        code == 1 and "classified 200 of 201 photos" in err and "zz_broken.jpg: UnsupportedImageError" in err
    )
    expected = [json.loads(line) for line in single_machine.read_text().splitlines()]
    records = list(PartitionFolder(str(output)).records())
    assert len(records) == 201 and len(expected) == 201
    by_path = {r["path"]: r for r in records}
    for record in expected:  # same JSON fields, same labels; scores as the same engine computes them
        got = by_path[record["path"]]
        assert got.keys() == record.keys()
        if "error" in record:
            assert got == record
            continue
        assert got["input"] == record["input"] and got["model"] == record["model"]
        assert [p["label"] for p in got["predictions"]] == [p["label"] for p in record["predictions"]]
        np.testing.assert_allclose(
            [p["score"] for p in got["predictions"]], [p["score"] for p in record["predictions"]], atol=1e-5
        )

    code, err = _run(
        "classify", str(photos), "--cluster", cluster.address, "--output", str(output), home=lite0_home
    )
    assert code == 0 and "skipped 201 already in" in err  # a rerun has nothing left to do
    lost = next(output.glob("part-*.jsonl"))
    lost_paths = {json.loads(line)["path"] for line in lost.read_text().splitlines()}
    lost.unlink()
    job = ClusterJob(sources=[str(photos)], output=str(output), address=cluster.address)
    leftover = (
        output / f".part-{job_token(job, job.check().identity)}-{'0' * 32}-4242.jsonl"
    )  # a killed writer's
    leftover.write_text('{"path": "half')
    others = output / f".part-{'f' * 12}-{'0' * 32}-4242.jsonl"  # another job's, writing into this folder
    others.write_text('{"path": "still writing')
    code, err = _run(
        "classify", str(photos), "--cluster", cluster.address, "--output", str(output), home=lite0_home
    )
    assert f"skipped {201 - len(lost_paths)} already in" in err
    again = list(PartitionFolder(str(output)).records())
    assert sorted(r["path"] for r in again) == sorted(by_path) and not leftover.exists()
    assert others.exists()  # cleaning up removes only this job's temporary files


@pytest.mark.slow
def test_extract_on_the_cluster_reads_a_url_and_writes_parquet_partitions(
    cluster: Any, photos: Path, lite0_home: Path, tmp_path: Path
) -> None:
    single = tmp_path / "features.npz"
    code, _ = _run("extract", str(photos), "--output", str(single), "--quiet", home=lite0_home)
    assert code == 1
    output = tmp_path / "features"
    source = f"file://{photos}"  # read through pyarrow's filesystems, as s3:// or gs:// would be
    argv = [
        "extract",
        source,
        "--cluster",
        cluster.address,
        "--output",
        str(output),
        "--partition-format",
        "parquet",
    ]
    code, err = _run(*argv, home=lite0_home)
    assert code == 1 and "extracted features of 200 of 201 photos" in err
    assert {p.suffix for p in output.glob("part-*")} == {".parquet"}  # beside them: _job.json, the settings
    records = {record["path"]: record for record in PartitionFolder(str(output)).records()}
    assert records[f"{source}/zz_broken.jpg"]["error"]["type"] == "UnsupportedImageError"
    expected = load_features(single)
    got = np.array([records[f"file://{path}"]["features"] for path in expected.paths], np.float32)
    np.testing.assert_allclose(got, expected.features, atol=1e-4)


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    cluster: Any, photos: Path, lite0_home: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results"
    argv = _small_block_job(cluster, photos, output)
    process = _cli(*argv, home=lite0_home)
    second_node = next(node for node in cluster.list_all_nodes() if not node.head)
    raylet = second_node.all_processes["raylet"][0].process.pid
    written_before_the_kill = _kill_a_model_actor_once_results_appear(output, process, raylet)
    assert 0 < written_before_the_kill < 201
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    records = list(PartitionFolder(str(output)).records())
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)) == 201
    assert sum("error" in r for r in records) == 1


def _small_block_job(cluster: Any, photos: Path, output: Path) -> list[str]:
    """classify on the cluster in blocks of 16 photos: partitions appear early and often."""
    return [
        "classify",
        str(photos),
        "--cluster",
        cluster.address,
        "--output",
        str(output),
        "--batch-size",
        "2",
    ]


def _wait_for_first_partition(output: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while not (output.is_dir() and any(output.glob("part-*"))):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the job ended or stalled before its first partition: {process.communicate()[1]}")
        time.sleep(0.05)


def _kill_a_model_actor_once_results_appear(output: Path, process: subprocess.Popen[str], raylet: int) -> int:
    """SIGKILL the model actor's process on the node of `raylet` as soon as the first partition is
    written; the records written by then."""
    _wait_for_first_partition(output, process)
    deadline = time.monotonic() + 300
    while not (actors := _model_actor_pids(raylet)):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the job finished or stalled before a model actor could be killed mid-run")
        time.sleep(0.05)
    os.kill(actors[0], signal.SIGKILL)
    return len(list(PartitionFolder(str(output)).records()))


@pytest.mark.slow
def test_a_stalled_job_stops_with_a_clear_error_and_a_rerun_resumes(
    cluster: Any, photos: Path, lite0_home: Path, tmp_path: Path
) -> None:
    """Every model actor stopped (SIGSTOP: a hung worker) once the first partition is written: the job
    must not wait forever. It stops after --stall-timeout, names what is left and exits 1; a rerun
    finishes the job from the written partitions."""
    output = tmp_path / "results"
    argv = _small_block_job(cluster, photos, output)
    process = _cli(*argv, "--stall-timeout", "8", home=lite0_home)
    stopped: list[int] = []
    try:
        _wait_for_first_partition(output, process)
        stopped = _model_actor_pids(None)
        assert stopped
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        _, err = process.communicate(timeout=120)
        waited = time.monotonic() - start
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert process.returncode == 1 and "Traceback" not in err, err
    assert "stopped making progress" in err and "run the same command again to resume" in err
    assert 8 <= waited < 60
    written = len(list(PartitionFolder(str(output)).records()))
    assert 0 < written < 201
    code, err = _run(*argv, home=lite0_home)
    assert code == 1, err  # the broken photo
    paths = [r["path"] for r in PartitionFolder(str(output)).records()]
    assert len(paths) == len(set(paths)) == 201


def _model_actor_pids(raylet: int | None) -> list[int]:
    """The model actors' processes (on the node of `raylet`, or on every node)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # gone meanwhile
            actor = command.startswith(b"ray::MapWorker") and b"ModelActor" in command
            if actor and raylet in (None, parent):
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["--cluster", "127.0.0.1:1", "--output", "out"],
            1,
            "ClusterError: no Ray cluster answers at 127.0.0.1:1",
        ),
        (["--cluster", "nonsense", "--output", "out"], 2, "--cluster takes local, auto or HOST:PORT"),
        (["--cluster", "local"], 2, "give it with --output DIR"),
        (["--cluster", "local", "--output", "out", "--sheet", "s.jpg"], 2, "run on one machine"),
    ],
)
def test_cluster_usage_and_connection_errors_are_clear(
    argv: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    got, _, err = run_cli(["classify", str(SAMPLE_DIR), *argv], capsys)
    assert got == code and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_partition_names_never_collide_for_different_path_lists() -> None:
    """Paths joined with new lines collided: ["a\\nb"] and ["a", "b"] named one partition."""
    assert partition_name(["a\nb"], "jsonl") != partition_name(["a", "b"], "jsonl")
    assert partition_name(["a", "b"], "jsonl") == partition_name(["a", "b"], "jsonl")  # a retry: the same


@pytest.fixture(scope="module")
def dogs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dogs")
    for photo in sorted(SAMPLE_DIR.glob("n0208*"))[:6]:
        (folder / photo.name).symlink_to(photo)
    return folder


@pytest.mark.slow
def test_groups_and_heatmaps_on_the_cluster_are_the_single_machine_records(
    cluster: Any, dogs: Path, lite0_home: Path, tmp_path: Path
) -> None:
    """`--cluster --groups dog` wrote records without their groups: the actors ranked the predictions
    themselves."""
    options = ["--groups", "dog", "--top-groups", "2", "--explain", "--top", "3"]
    single = tmp_path / "single.jsonl"
    code, err = _run("classify", str(dogs), *options, "--output", str(single), "--quiet", home=lite0_home)
    assert code == 0, err
    output = tmp_path / "partitions"
    code, err = _run(
        "classify",
        str(dogs),
        *options,
        "--cluster",
        cluster.address,
        "--output",
        str(output),
        home=lite0_home,
    )
    assert code == 0, err
    got = {r["path"]: r for r in PartitionFolder(str(output)).records()}
    for expected in map(json.loads, single.read_text().splitlines()):
        record = got[expected["path"]]
        assert record.keys() == expected.keys() >= {"groups", "explanation"}
        assert [g["name"] for g in record["groups"]] == [g["name"] for g in expected["groups"]]
        assert record["groups"][0]["name"] == "dog" and record["groups"][0]["score"] > 0.5
        np.testing.assert_allclose(record["explanation"]["grid"], expected["explanation"]["grid"], atol=1e-4)


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_and_mixes_nothing(
    cluster: Any, dogs: Path, photos: Path, lite0_home: Path, tmp_path: Path
) -> None:
    """A rerun into the same folder with `--top 5` and more photos counted every photo of the first run
    (made with `--top 3`) as done and added the others: one folder, two settings."""
    output = tmp_path / "partitions"
    first = ["--cluster", cluster.address, "--output", str(output)]
    code, err = _run("classify", str(dogs), *first, "--top", "3", home=lite0_home)
    assert code == 0, err
    written = sorted(p.name for p in output.iterdir())
    code, err = _run("classify", str(dogs), str(photos), *first, "--top", "5", home=lite0_home)
    assert code == 2 and "--top was 3, now 5" in err and "Traceback" not in err
    code, err = _run(
        "classify", str(photos), *first, "--top", "3", "--model", "squeezenet1_1", home=lite0_home
    )
    assert code == 2 and "--model was 'efficientnet_lite0', now 'squeezenet1_1'" in err
    assert sorted(p.name for p in output.iterdir()) == written
    assert {len(r["predictions"]) for r in PartitionFolder(str(output)).records()} == {3}


class _Folder:
    """A partition folder that never changes (what the watchdog sees of a stalled job)."""

    def partition_count(self) -> int:
        return 0

    def paths(self) -> set[str]:
        return set()


def test_a_job_that_ends_as_the_watchdog_fires_reports_its_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the job finished between the watchdog's check and its SIGINT, the completed job exited 130 with
    no summary: the interrupt arrived after the results."""
    import threading

    from imagenet_zoo.jobs.cluster import watchdog

    monkeypatch.setattr(watchdog, "_STARTUP_S", 0.0)
    job = ClusterJob(sources=["a.jpg"], output="unused", stall_timeout_s=0.2)
    done, real_kill = threading.Event(), signal.pthread_kill

    def kill_as_the_job_ends(thread: int, signum: int) -> None:
        done.set()  # the job's last block comes back now...
        time.sleep(0.2)  # ...and the interrupt is delivered just after
        real_kill(thread, signum)

    monkeypatch.setattr(signal, "pthread_kill", kill_as_the_job_ends)

    def work() -> str:
        done.wait(10)
        return "the report"

    assert watchdog.watched(work, _Folder(), job, ["a.jpg"]) == "the report"  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="stopped making progress"):  # a real stall still stops
        monkeypatch.setattr(signal, "pthread_kill", real_kill)
        watchdog.watched(lambda: time.sleep(10), _Folder(), job, ["a.jpg"])  # type: ignore[arg-type]


def test_a_partition_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    """Temporary partition names were predictable (token, photos' digest, pid) and opened without an
    exclusive create: a link planted at the name redirected the write to any file."""
    from imagenet_zoo.jobs.cluster.partitions import write_partition

    output, victim = tmp_path / "partitions", tmp_path / "victim.txt"
    output.mkdir()
    victim.write_text("precious")
    records = [{"path": "a.jpg", "error": {"type": "CorruptImageError", "message": "x"}}]
    digest = partition_name(["a.jpg"], "jsonl").removeprefix("part-").split(".")[0]
    token = "0" * 12
    (output / f".part-{token}-{digest}-{os.getpid()}.jsonl").symlink_to(victim)  # the old, predictable name
    write_partition(str(output), "jsonl", "classify", token, records)
    assert victim.read_text() == "precious"
    assert json.loads((output / f"part-{digest}.jsonl").read_text()) == records[0]


def test_the_watchdog_stops_a_job_started_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command started with `&` or nohup ignores SIGINT, the watchdog's too: a stalled job waited
    forever. Ctrl-C stays ignored there; the watchdog's interrupt does not."""
    from imagenet_zoo.jobs.cluster import watchdog

    monkeypatch.setattr(watchdog, "_STARTUP_S", 0.0)
    job = ClusterJob(sources=["a.jpg"], output="unused", stall_timeout_s=0.2)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        signal.raise_signal(signal.SIGINT)  # still ignored
        with pytest.raises(ClusterError, match="stopped making progress"):
            watchdog.watched(lambda: time.sleep(10), _Folder(), job, ["a.jpg"])  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_folder_claimed_by_another_job_is_refused_before_its_first_partition(tmp_path: Path) -> None:
    """claim wrote _job.json whenever the folder held no finished partition: two jobs with different
    settings, one still starting its actors, could both write into one folder."""
    from imagenet_zoo.errors import UsageError
    from imagenet_zoo.jobs.cluster import PartitionFolder

    folder = PartitionFolder(str(tmp_path))
    folder.claim({"task": "classify", "model": "efficientnet_lite0", "top": 5})
    folder.claim({"task": "classify", "model": "efficientnet_lite0", "top": 5})  # the same job: fine
    with pytest.raises(UsageError, match="--top"):
        folder.claim({"task": "classify", "model": "efficientnet_lite0", "top": 3})


@pytest.mark.parametrize(("name", "content"), [("part-0.jsonl", b"not json\n"), ("part-1.jsonl", b"[1, 2]\n"),
                                               ("part-2.parquet", b"PAR1 not really")])  # fmt: skip
def test_a_foreign_partition_is_a_typed_error(name: str, content: bytes, tmp_path: Path) -> None:
    """A corrupt or foreign part-* file made a rerun die with a traceback."""
    from imagenet_zoo.errors import ClusterError
    from imagenet_zoo.jobs.cluster import PartitionFolder

    (tmp_path / name).write_bytes(content)
    folder = PartitionFolder(str(tmp_path))
    with pytest.raises(ClusterError, match="not a partition this tool wrote"):
        folder.paths()
    with pytest.raises(ClusterError, match=name):
        list(folder.records())


@pytest.mark.slow
@pytest.mark.parametrize("partition_format", ["jsonl", "parquet"])
def test_a_photo_whose_name_is_not_utf8_is_classified_on_the_cluster_and_resumed(
    cluster: Any, lite0_home: Path, tmp_path: Path, partition_format: str
) -> None:
    """A name from a Latin-1 system (`caf\\xe9.jpg`) reaches Python as a surrogate escape, which neither
    Arrow (Ray Data's blocks, Parquet) nor UTF-8 can hold as it is."""
    folder = tmp_path / "photos"
    folder.mkdir()
    named = [os.fsdecode(b"caf\xe9.jpg"), "plain.jpg"]
    for name, photo in zip(named, sorted(SAMPLE_DIR.iterdir()), strict=False):
        (folder / name).symlink_to(photo)
    output = tmp_path / "results"
    argv = ["classify", str(folder), "--cluster", cluster.address, "--output", str(output)]
    code, err = _run(*argv, "--partition-format", partition_format, home=lite0_home)
    assert code == 0 and "classified 2 of 2 photos" in err, err
    paths = sorted(record["path"] for record in PartitionFolder(str(output)).records())
    escaped = "caf\\xe9.jpg" if partition_format == "parquet" else os.fsdecode(b"caf\xe9.jpg")
    assert paths == sorted([str(folder / escaped), str(folder / "plain.jpg")])
    code, err = _run(*argv, "--partition-format", partition_format, home=lite0_home)
    assert code == 0 and "skipped 2 already in" in err, err


def test_a_partition_that_cannot_be_written_is_a_typed_error_and_leaves_nothing(tmp_path: Path) -> None:
    from imagenet_zoo.errors import PartitionWriteError
    from imagenet_zoo.jobs.cluster.partitions import write_partition

    not_a_folder = tmp_path / "out"
    not_a_folder.write_text("a file where the folder should be")
    with pytest.raises(PartitionWriteError, match="cannot write a partition into"):
        write_partition(str(not_a_folder), "jsonl", "classify", "0" * 12, [{"path": "a.jpg"}])


def test_a_block_whose_partition_was_not_written_stops_the_job() -> None:
    """Ray hands the driver an actor's exception as text: the actor says so in its rows instead."""
    from imagenet_zoo.errors import PartitionWriteError
    from imagenet_zoo.jobs.cluster import _collect

    def block(unwritten: str) -> dict[str, np.ndarray]:
        paths = np.array([b"a.jpg", b"b.jpg"], dtype=object)
        empty = np.array(["", ""])
        unwritten_rows = np.array([unwritten] * 2)
        return {"path": paths, "error_type": empty, "error_message": empty, "unwritten": unwritten_rows}

    class Dataset:
        def iter_batches(self, **kwargs: Any) -> Iterator[dict[str, np.ndarray]]:
            yield block("")
            yield block("cannot write a partition into out: No space left on device")
            raise AssertionError("the job went on")

    with pytest.raises(PartitionWriteError, match="No space left on device"):
        _collect(Dataset())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KB file system (a tmpfs), where this machine lets the test mount one."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(folder)]
    try:
        made = subprocess.run(mount, capture_output=True, check=False)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_on_the_cluster_is_one_line_and_a_rerun_finishes(
    cluster: Any, photos: Path, lite0_home: Path, small_disk: Path
) -> None:
    output = small_disk / "results"
    argv = ["classify", str(photos), "--cluster", cluster.address, "--output", str(output)]
    code, err = _run(*argv, home=lite0_home)
    assert code == 1 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith("imagenet-zoo:")]
    assert "PartitionWriteError" in line and "No space left on device" in line and "rerun the same" in line
    done = PartitionFolder(str(output)).paths()
    assert f"{len(done):,} photos are safe" in line and not list(output.glob(".part-*"))
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    code, err = _run(*argv, home=lite0_home)
    broken_left = not any(path.endswith("zz_broken.jpg") for path in done)  # which blocks made it varies
    assert code == (1 if broken_left else 0) and f"skipped {len(done)} already in" in err, err
    assert len(PartitionFolder(str(output)).paths()) == 201

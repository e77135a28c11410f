"""Files built to hurt, third round: what the tool reads back and what it writes. Each test is the attack
(or the careless use) as it was reproduced."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenet_zoo.jobs.identity import job_identity, write_identity
from imagenet_zoo.jobs.results import RecordsFile, UnreadableResultsError
from imagenet_zoo.pipeline import LoadConfig, PostOptions
from imagenet_zoo.registry import default_registry
from tests.conftest import SAMPLE_DIR, run_cli, run_measured

SAMPLE = sorted(SAMPLE_DIR.iterdir())
BLP = "timeout-bba4f2e026b5786529370e5dfe9a11b1bf991f07.blp"  # 571 bytes that ask for 51 megapixels


@pytest.fixture(scope="module")
def pillow_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pillow's own test images (Tests/images of the installed release's source, from PyPI): hundreds of
    odd, broken and hostile files that Pillow's developers collected."""
    import PIL

    folder = tmp_path_factory.mktemp("pillow")
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                f"pillow=={PIL.__version__}", "--dest", str(folder)]  # fmt: skip
    subprocess.run(download, check=True, capture_output=True, timeout=600)
    [archive] = folder.glob("pillow-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/Tests/images/" in m.name and m.isfile()]
        tar.extractall(folder, members=members, filter="data")
    [images] = folder.glob("pillow-*/Tests/images")
    return images


def _results(output: str) -> list[dict[str, object]]:
    """The JSON array in a command's output (its summary follows on stderr)."""
    results, _ = json.JSONDecoder().raw_decode(output, output.index("["))
    return results  # type: ignore[no-any-return]


def _classify_measured(*argv: str, home: Path) -> tuple[int, str, float]:
    env = {**os.environ, "IMAGENET_ZOO_HOME": str(home)}
    return run_measured([sys.executable, "-m", "imagenet_zoo", "classify", *argv], env=env)


@pytest.mark.slow
def test_a_folder_of_a_hostile_file_classifies_in_fixed_memory(
    pillow_images: Path, lite0_home: Path, tmp_path: Path
) -> None:
    """A 571-byte BLP cost ~400 MB before it was found truncated, and that memory was never given back:
    16 copies peaked at 6.6 GB, 64 were killed by the OOM killer at 24 GB (each failure's traceback held
    its decoder's buffers; 16 threads decoded at once, and glibc kept their freed pages)."""
    folder = tmp_path / "blp"
    folder.mkdir()
    for n in range(64):
        shutil.copy(pillow_images / BLP, folder / f"b{n:02d}.jpg")
    code, out, one = _classify_measured(
        str(folder / "b00.jpg"), "--format", "json", "--workers", "1", home=lite0_home
    )
    assert code == 1 and _results(out)[0]["error"]["type"] == "CorruptImageError"
    code, out, many = _classify_measured(str(folder), "--format", "json", "--workers", "16", home=lite0_home)
    results = _results(out)
    assert (
        code == 1 and len(results) == 64 and all(r["error"]["type"] == "CorruptImageError" for r in results)
    )
    assert many < 1024 and many < one + 100  # the 64th file costs what the first did
    assert "Traceback" not in out


@pytest.mark.slow
def test_pillows_test_corpus_in_one_call(pillow_images: Path, lite0_home: Path) -> None:
    """Pillow's whole test corpus (about a thousand files) peaked at 2.2 GB in one call."""
    code, out, peak = _classify_measured(str(pillow_images / "**" / "*"), "--format", "json", home=lite0_home)
    results = _results(out)
    assert code == 1 and len(results) > 1000 and "Traceback" not in out
    assert sum("predictions" in r for r in results) > 500  # the ordinary files are classified
    assert peak < 1024


def _records(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def lite0_identity() -> dict[str, object]:
    lite0 = default_registry().get("lite0")
    return job_identity("classify", LoadConfig(resize="crop"), lite0, PostOptions())


def test_resume_keeps_an_indented_json_array_whole(tmp_path: Path, lite0_identity: dict[str, object]) -> None:
    """The JSON of `classify --format json` (indented) was read up to its first indented line, then the
    file was rewritten in place with what was read: 3 records lost, silently."""
    output = tmp_path / "results.json"
    records = [{"path": f"{n}.jpg", "error": {"type": "CorruptImageError", "message": "x"}} for n in range(3)]
    output.write_text(json.dumps(records, indent=2) + "\n")
    write_identity(output, lite0_identity)
    with RecordsFile(output, columns=[], resume=True, identity=lite0_identity) as results:
        assert results.done == {"0.jpg", "1.jpg", "2.jpg"}
        results.write_record({"path": "3.jpg", "error": {"type": "CorruptImageError", "message": "y"}})
    assert [r["path"] for r in json.loads(output.read_text())] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]


def test_a_json_array_from_the_terminal_is_not_resumed_over(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`classify --format json > results.json`, then `--output results.json --resume`: it has no record of
    its settings, so it is refused and left whole (it lost its 3 records before)."""
    code, out, _ = run_cli(["classify", *map(str, SAMPLE[:3]), "--format", "json"], capsys)
    output = tmp_path / "results.json"
    output.write_text(out)
    code, _, err = run_cli(["classify", *map(str, SAMPLE[3:5]), "--output", str(output), "--resume"], capsys)
    assert code == 2 and "no record of the settings" in err
    assert output.read_text() == out and len(json.loads(out)) == 3


@pytest.mark.parametrize(
    ("suffix", "text", "problem"),
    [
        (".jsonl", '{"path": "a.jpg"}\nnot json\n{"path": "c.jpg"}\n', "line 2 is not a record"),
        (".jsonl", '{"path": "a.jpg"}\n["no path"]\n', "line 2 is not a record"),
        (".json", '[\n{"path": "a.jpg"},\n{"path": "b.jpg",, },\n{"path": "c.jpg"}\n]\n', "element 2"),
        (".json", '{"path": "a.jpg"}\n', "not a JSON array"),
    ],
)
def test_resume_refuses_what_it_cannot_read_and_leaves_it(
    tmp_path: Path, lite0_identity: dict[str, object], suffix: str, text: str, problem: str
) -> None:
    """A malformed JSONL (or CSV) gave a traceback; a JSON array was cut at the first element it could not
    read, and everything after it was lost."""
    output = tmp_path / f"results{suffix}"
    output.write_text(text)
    write_identity(output, lite0_identity)
    with pytest.raises(UnreadableResultsError, match=problem):
        RecordsFile(output, columns=[], resume=True, identity=lite0_identity)
    assert output.read_text() == text


def test_resume_refuses_a_malformed_csv(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.csv"
    argv = ["classify", *map(str, SAMPLE[:2]), "--output", str(output)]
    assert run_cli(argv, capsys)[0] == 0
    lines = output.read_bytes().splitlines(keepends=True)
    broken = b"".join([lines[0], lines[1].rstrip(b"\r\n") + b",an extra cell\r\n", *lines[2:]])
    output.write_bytes(broken)
    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 2 and "line 2 has" in err and "Traceback" not in err
    assert output.read_bytes() == broken


def test_a_last_record_without_a_new_line_is_kept(tmp_path: Path, lite0_identity: dict[str, object]) -> None:
    """Another tool's last line without its new line was dropped as if a crash had cut it."""
    output = tmp_path / "results.jsonl"
    output.write_text('{"path": "a.jpg"}\n{"path": "b.jpg"}')
    write_identity(output, lite0_identity)
    with RecordsFile(output, columns=[], resume=True, identity=lite0_identity) as results:
        assert results.done == {"a.jpg", "b.jpg"}
        results.write_record({"path": "c.jpg"})
    assert _records(output) == ['{"path": "a.jpg"}', '{"path": "b.jpg"}', '{"path": "c.jpg"}']


def test_a_crash_during_the_repair_leaves_the_original(
    tmp_path: Path, lite0_identity: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair (a record a crash cut short, dropped) was written over the file itself: a crash during
    it lost everything. It is written beside it and renamed in one step."""
    output = tmp_path / "results.jsonl"
    text = '{"path": "a.jpg"}\n{"path": "b.jpg"}\n{"path": "c.j'
    output.write_text(text)
    write_identity(output, lite0_identity)

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        RecordsFile(output, columns=[], resume=True, identity=lite0_identity)
    assert output.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == [
        "results.jsonl",
        "results.jsonl.job.json",
    ]


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLE[0], folder / "cat.jpg")
    Image.open(SAMPLE[1]).save(folder / "cat.png")
    return folder


def _bytes_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.is_symlink()}


def test_annotations_never_overwrite_a_file_the_run_did_not_create(
    with_lite0: Path, photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--annotate-dir` into the photo folder replaced the originals; cat.png's copy overwrote an unrelated
    cat.jpg; a link planted in a shared output folder redirected the write."""
    originals = _bytes_of(photo_folder)
    argv = ["classify", str(photo_folder), "--annotate-dir", str(photo_folder), "--quiet"]
    assert run_cli(argv, capsys)[0] == 0
    after = _bytes_of(photo_folder)
    assert {name: after[name] for name in originals} == originals  # the photos are untouched
    assert sorted(set(after) - set(originals)) == ["cat-2.jpg", "cat-3.jpg"]  # new names for both copies

    shared, victim = tmp_path / "shared", tmp_path / "victim.txt"
    shared.mkdir()
    victim.write_text("precious")
    (shared / "cat.jpg").symlink_to(victim)
    assert run_cli(["classify", str(photo_folder / "cat.png"), "--annotate-dir", str(shared)], capsys)[0] == 0
    assert victim.read_text() == "precious" and (shared / "cat.jpg").is_symlink()
    assert (shared / "cat-2.jpg").is_file() and not (shared / "cat-2.jpg").is_symlink()
    with Image.open(shared / "cat-2.jpg") as labelled:
        assert labelled.size == Image.open(photo_folder / "cat.png").size


def test_overwrite_replaces_only_what_is_not_an_input(
    with_lite0: Path, photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "labelled.jpg"
    target.write_bytes(b"an older annotation")
    one = ["classify", str(photo_folder / "cat.jpg"), "--annotate", str(target)]
    code, _, err = run_cli(one, capsys)
    assert (
        code == 2
        and "exists: --overwrite replaces it" in err
        and target.read_bytes() == b"an older annotation"
    )
    assert run_cli([*one, "--overwrite"], capsys)[0] == 0 and Image.open(target).format == "JPEG"
    photo = str(photo_folder / "cat.jpg")
    code, _, err = run_cli(["classify", photo, "--annotate", photo, "--overwrite"], capsys)
    assert code == 2 and "is one of the photos" in err
    originals = _bytes_of(photo_folder)
    argv = ["classify", str(photo_folder), "--annotate-dir", str(photo_folder), "--overwrite", "--quiet"]
    assert run_cli(argv, capsys)[0] == 0
    assert {name: _bytes_of(photo_folder)[name] for name in originals} == originals


@pytest.mark.slow
def test_a_heatmap_over_a_huge_photo_is_drawn_on_a_bounded_size(lite0_home: Path, tmp_path: Path) -> None:
    """Heatmaps were drawn at full resolution, about 112 bytes a pixel: ~7 GiB for a 64-MP photo, which a
    crafted PNG of a few hundred KB is."""
    photo = tmp_path / "huge.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (7900, 31))[:, :7900]).convert("RGB").save(photo)
    assert photo.stat().st_size < 2**20
    out = tmp_path / "why.jpg"
    code, output, peak = _classify_measured(str(photo), "--explain", "--annotate", str(out), home=lite0_home)
    assert code == 0, output
    assert max(Image.open(out).size) <= 1024 and peak < 1536


def test_an_odd_class_to_explain_is_refused_before_anything_is_written(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--explain-class ²` (a digit to str.isdigit) or a 5,000-digit number: a traceback after the model had
    loaded and --output had been truncated."""
    output = tmp_path / "results.jsonl"
    output.write_text("precious\n")
    for odd in ("²", "9" * 5000, "-1"):
        code, _, err = run_cli(
            ["classify", str(SAMPLE[0]), "--explain-class", odd, "--output", str(output)], capsys
        )
        assert code == 2 and "Traceback" not in err and output.read_text() == "precious\n"


def test_the_photo_kept_for_a_heatmap_stays_inside_the_decode_budget(
    lite0_classifier: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's heatmap path copied the decoded photo at full size (not counted by the budget) and
    reduced it after the budget was given back: about 200 MB outside the 512 MB budget per decoding
    thread. The reduced photo is made directly, while the decode still holds its share."""
    photo = tmp_path / "big.png"
    Image.fromarray(np.zeros((3000, 4000, 3), np.uint8)).save(photo)
    held_during: list[int] = []
    copies: list[tuple[int, int]] = []
    pipeline = lite0_classifier
    original_copy, original_resize = Image.Image.copy, Image.Image.resize

    def copy(image: Image.Image) -> Image.Image:
        copies.append(image.size)
        return original_copy(image)

    def resize(image: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        held_during.append(pipeline.budget.held)  # type: ignore[attr-defined]
        return original_resize(image, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "copy", copy)
    monkeypatch.setattr(Image.Image, "resize", resize)
    (info, _), kept = pipeline.preprocess_keeping(str(photo), 1024)  # type: ignore[attr-defined, misc]
    assert kept is not None and max(kept.size) == 1024 and info.width == 4000
    assert (4000, 3000) not in copies  # no full-size copy
    assert held_during and all(held > 0 for held in held_during)  # every resize inside the budget
    assert pipeline.budget.held == 0  # type: ignore[attr-defined]

"""Folder jobs: streamed result files, resume, interruption, progress and hostile folders."""

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenet_zoo.classifier import Classifier
from imagenet_zoo.data.images import find_images
from imagenet_zoo.jobs import folder as folder_job
from imagenet_zoo.progress import Progress
from tests.conftest import SAMPLE_DIR, run_cli, sample_folder
from tests.test_images import png_header_only

SAMPLE = sorted(SAMPLE_DIR.iterdir())


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for file in SAMPLE[:6]:
        shutil.copy(file, folder / file.name)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def _paths_in(output: Path) -> list[str]:
    """The paths a results file holds (names that are not UTF-8 read back as the surrogates Python
    gives them)."""
    if output.suffix == ".csv":
        with output.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
            return [row["path"] for row in csv.DictReader(f)]
    if output.suffix == ".json":
        return [obj["path"] for obj in json.loads(output.read_text())]
    return [json.loads(line)["path"] for line in output.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_results_stream_to_a_file_in_each_format(
    with_lite0: Path, photos: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / f"results{suffix}"
    code, out, err = run_cli(["classify", str(photos), "--output", str(output), "--top", "3"], capsys)
    assert code == 1 and out == ""  # one broken file; results went to the file, not stdout
    assert _paths_in(output) == find_images([str(photos)])
    assert "classified 6 of 7 photos" in err and "zz_broken.jpg: CorruptImageError" in err
    if suffix == ".csv":
        with output.open(newline="") as f:
            rows = list(csv.DictReader(f))
        tench = rows[0]
        assert (
            tench["top1_synset"] == "n01440764" and float(tench["top1_score"]) > 0.5 and tench["top3_label"]
        )
        assert rows[-1]["error_type"] == "CorruptImageError" and rows[-1]["top1_label"] == ""
    else:
        objects = (
            json.loads(output.read_text())
            if suffix == ".json"
            else [json.loads(line) for line in output.read_text().splitlines()]
        )
        assert objects[0]["predictions"][0]["synset"] == "n01440764" and len(objects[0]["predictions"]) == 3
        assert objects[-1]["error"]["type"] == "CorruptImageError"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_resume_skips_what_is_done_even_after_a_crash_mid_line(
    with_lite0: Path, photos: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / f"results{suffix}"
    run_cli(["classify", str(photos), "--output", str(output)], capsys)
    complete = output.read_bytes()
    cut = complete[: complete.find(b"n01530575_bram") + 12]  # "crashed" while writing the third photo
    output.write_bytes(cut)
    code, _, err = run_cli(["classify", str(photos), "--output", str(output), "--resume"], capsys)
    assert code == 1  # the broken file is classified again, and fails again
    assert "skipped 2 already in" in err and "classified 4 of 5 photos" in err
    assert _paths_in(output) == find_images([str(photos)])  # each photo exactly once, in order


def test_resume_needs_an_output(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["classify", str(photos), "--resume"], capsys)[0] == 2
    assert run_cli(["classify", str(photos), "--output", "results.txt"], capsys)[0] == 2


def test_ctrl_c_keeps_everything_already_classified(
    with_lite0: Path,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = Classifier.run

    def interrupted(self, inputs, *args, **options):  # type: ignore[no-untyped-def]
        for n, result in enumerate(real(self, inputs, *args, **options)):
            if n == 3:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(Classifier, "run", interrupted)
    output = tmp_path / "results.json"
    assert run_cli(["classify", str(photos), "--output", str(output), "--batch-size", "2"], capsys)[0] == 130
    assert _paths_in(output) == find_images([str(photos)])[:3]  # still a valid JSON array


def test_hostile_folder(
    with_lite0: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "hostile"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE[0], folder / "a_good.jpg")
    shutil.copy(SAMPLE[5], folder / "sub" / "b_good.jpg")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)  # a symlink loop
    (folder / "c_bomb.png").write_bytes(png_header_only(50_000, 50_000))
    (folder / "d_text.jpg").write_text("not a photo")
    os.mkfifo(folder / "e_fifo.jpg")  # reading it would block forever
    shutil.copy(SAMPLE[1], folder / "f_vanishes.jpg")
    shutil.copy(SAMPLE[2], folder / "g_secret.jpg")
    (folder / "notes.txt").write_text("ignored: not an image suffix")

    real_find = folder_job.find_images

    def find_then_delete(paths: list[str], *, recursive: bool = False) -> list[str]:
        found = real_find(paths, recursive=recursive)
        (folder / "f_vanishes.jpg").unlink()  # disappears between listing and decoding
        return found

    real_open = Path.open

    def open_unless_secret(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if self.name == "g_secret.jpg":
            raise PermissionError(13, "Permission denied")  # root reads anything, so simulate it
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(folder_job, "find_images", find_then_delete)
    monkeypatch.setattr(Path, "open", open_unless_secret)
    code, out, err = run_cli(
        ["classify", str(folder), "--recursive", "--format", "json", "--top", "1"], capsys
    )
    assert code == 1 and "Traceback" not in err
    results = {Path(r["path"]).name: r for r in json.loads(out)}
    assert sorted(results) == [
        "a_good.jpg",
        "b_good.jpg",
        "c_bomb.png",
        "d_text.jpg",
        "e_fifo.jpg",
        "f_vanishes.jpg",
        "g_secret.jpg",
    ]
    assert "predictions" in results["a_good.jpg"] and "predictions" in results["b_good.jpg"]
    errors = {name: r["error"]["type"] for name, r in results.items() if "error" in r}
    assert errors == {
        "c_bomb.png": "ImageTooLargeError",
        "d_text.jpg": "UnsupportedImageError",
        "e_fifo.jpg": "ImageNotFoundError",
        "f_vanishes.jpg": "ImageNotFoundError",
        "g_secret.jpg": "ImageNotFoundError",
    }
    assert "cannot read: Permission denied" in results["g_secret.jpg"]["error"]["message"]


def test_globs(with_lite0: Path, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["classify", str(photos / "n015*.JPEG"), "--format", "json", "--top", "1"], capsys)
    assert code == 0
    assert [Path(r["path"]).name for r in json.loads(out)] == [
        f.name for f in SAMPLE[:6] if f.name.startswith("n015")
    ]
    assert run_cli(["classify", str(photos / "*.webp")], capsys)[0] == 2  # matches nothing


def test_annotate_dir_and_contact_sheet(
    with_lite0: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled, sheet = tmp_path / "labelled", tmp_path / "sheet.jpg"
    argv = ["classify", str(photos), "--annotate-dir", str(labelled), "--sheet", str(sheet), "--quiet"]
    assert run_cli(argv, capsys)[0] == 1
    assert len(list(labelled.iterdir())) == 6  # the broken file gets no labelled copy
    with Image.open(sheet) as image:
        assert image.size == (3 * 192, 2 * (192 + 19))  # 6 tiles: 3 columns x 2 rows, with captions


def test_progress_line_has_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress("Classifying", 10, unit="img", stream=stream, enabled=True)
    for _ in range(10):
        progress.update()
    progress.close()
    last = stream.getvalue().strip().split("\r")[-1]
    assert "10/10 img" in last and "100.0%" in last and "ETA" in last and "img/s" in last
    quiet = io.StringIO()
    Progress("x", 3, stream=quiet, enabled=False).update(3)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_resume_with_other_settings_is_refused_naming_the_difference(
    with_lite0: Path, photos: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--top 3`, then `--top 5 --resume`: the file got rows of both shapes (in CSV, with groups, values
    under the wrong columns); another model's answers were appended just the same."""
    output = tmp_path / f"results{suffix}"
    base = ["classify", str(photos), "--output", str(output)]
    assert run_cli([*base, "--top", "3"], capsys)[0] == 1  # the broken photo
    written = output.read_bytes()
    for extra, difference in [
        (["--top", "5"], "--top was 3, now 5"),
        (["--top", "3", "--groups", "dog"], "--groups was [], now ['n02084071']"),
        (["--top", "3", "--model", "squeezenet1_1"], "--model was 'efficientnet_lite0', now 'squeezenet1_1'"),
        (["--top", "3", "--decode", "full"], "--decode was 'fast', now 'full'"),
    ]:
        code, _, err = run_cli([*base, *extra, "--resume"], capsys)
        assert code == 2 and difference in err and "Traceback" not in err, err
        assert output.read_bytes() == written  # refused before the file was touched
    code, _, err = run_cli([*base, "--top", "3", "--resume"], capsys)  # the same settings: nothing left to do
    assert code == 0 and "skipped 7 already in" in err and _paths_in(output) == find_images([str(photos)])


def test_a_results_file_without_its_settings_is_not_resumed(
    with_lite0: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.jsonl"
    output.write_text('{"path": "elsewhere.jpg", "model": "resnet50", "predictions": []}\n')
    code, _, err = run_cli(["classify", str(photos), "--output", str(output), "--resume"], capsys)
    assert code == 2 and "no record of the settings" in err
    assert output.read_text().count("\n") == 1


def test_a_rerun_without_resume_never_throws_the_results_away(
    with_lite0: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a crash, the same command without --resume replaced the 648 records already written by the
    new run's, silently."""
    output = tmp_path / "r.jsonl"
    assert run_cli(["classify", str(photos), "--output", str(output)], capsys)[0] == 1  # zz_broken.jpg
    before = output.read_bytes()
    code, _, err = run_cli(["classify", str(photos), "--output", str(output)], capsys)
    held = len(before.splitlines())
    assert code == 2 and f"holds {held} records" in err and "--resume" in err and "--overwrite" in err, err
    assert output.read_bytes() == before
    assert run_cli(["classify", str(photos), "--output", str(output), "--overwrite"], capsys)[0] == 1
    assert len(output.read_bytes().splitlines()) == held


def test_names_with_characters_that_split_lines_resume_from_csv(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """str.splitlines splits at U+2028, U+2029, U+0085, \\x1c-\\x1e, \\v and \\f, which the CSV writer does
    not quote: a file named with one made --resume refuse the whole file ("line 3 has 1 cells")."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, odd in enumerate(["\u2028", "\u2029", "\u0085", "\x1c", "\x1e", "\x0b", "\x0c"]):
        shutil.copy(SAMPLE[i], folder / f"a{odd}b{i}.jpg")
    output = tmp_path / "r.csv"
    assert run_cli(["classify", str(folder), "--output", str(output)], capsys)[0] == 0
    code, _, err = run_cli(["classify", str(folder), "--output", str(output), "--resume"], capsys)
    assert code == 0 and "UnreadableResultsError" not in err, err
    assert sorted(_paths_in(output)) == sorted(str(p) for p in folder.iterdir())


def test_a_full_disk_is_one_line_saying_what_is_safe(
    with_lite0: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Results written to a full file system ended the job with two chained OSError tracebacks."""
    for suffix in (".jsonl", ".csv", ".json"):
        full = tmp_path / f"full{suffix}"
        full.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
        code, _, err = run_cli(["classify", str(photos), "--output", str(full)], capsys)
        lines = [line for line in err.splitlines() if line.startswith("imagenet-zoo:")]
        assert code == 1 and "Traceback" not in err, err
        assert len(lines) == 1 and "No space left on device" in lines[0] and "--resume" in lines[0], err


def test_one_job_writes_a_results_file_at_a_time(
    with_lite0: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two jobs on one results file (a second terminal, an overlapping cron run) both said they had
    succeeded: 617 lines for 800 records, one of them NUL bytes. The second stops at once now, naming the
    process that writes the file; the lock of a process that died does not block."""
    import os
    import signal
    import subprocess
    import sys

    from imagenet_zoo.jobs.results import RecordsFile

    output = tmp_path / "r.jsonl"
    with RecordsFile(output, columns=["path"]):
        code, _, err = run_cli(["classify", str(photos), "--output", str(output), "--resume"], capsys)
        assert code == 2 and "being written by another job" in err and f"process {os.getpid()}" in err, err
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from imagenet_zoo.jobs.results import RecordsFile\n"
         f"RecordsFile(Path({str(output)!r}), columns=['path'], overwrite=True)\n"
         "print('holding', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    code, _, err = run_cli(["classify", str(photos), "--output", str(output), "--overwrite"], capsys)
    assert code == 1 and "zz_broken.jpg" in err, err  # ran: every photo but the broken one classified


def test_a_photo_whose_name_is_not_utf8_is_classified_resumed_and_shown(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """caf\\xe9.jpg (a Latin-1 name) reaches Python as a surrogate escape: classify --output r.csv wrote
    the header and died with UnicodeEncodeError, and --resume died the same way; a table on a UTF-8
    terminal did too."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "photos"
    folder.mkdir()
    latin1 = folder / os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(SAMPLE[0], latin1)
    shutil.copy(SAMPLE[1], folder / "plain.jpg")
    for suffix in (".csv", ".jsonl", ".json"):
        output = tmp_path / f"r{suffix}"
        assert run_cli(["classify", str(folder), "--output", str(output)], capsys)[0] == 0
        assert sorted(_paths_in(output)) == sorted([str(latin1), str(folder / "plain.jpg")])
        code, _, err = run_cli(["classify", str(folder), "--output", str(output), "--resume"], capsys)
        assert code == 0 and "Traceback" not in err, err
    table = subprocess.run(
        [sys.executable, "-m", "imagenet_zoo", "classify", str(latin1)], capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"}, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert b"caf\\udce9.jpg" in table.stdout and b"Traceback" not in table.stderr


def _cut_short(journal: Path, records: int) -> None:
    """The journal as kill -9 leaves it: `records` whole lines, then half of the next."""
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:records]) + lines[records][: len(lines[records]) // 2])


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_extract_streams_its_features_and_resumes_after_a_crash(
    with_lite0: Path, photos: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """It held every feature in memory and wrote the file at the end: kill -9 left nothing, and it had no
    --resume."""
    from imagenet_zoo.jobs import features as feature_files
    from imagenet_zoo.jobs.features import journal_of, load_features

    whole = tmp_path / f"whole{suffix}"
    assert run_cli(["extract", str(photos), "--output", str(whole), "--quiet"], capsys)[0] == 1  # broken
    expected = load_features(whole)
    assert not journal_of(whole).exists() and len(expected.paths) == 6

    output = tmp_path / f"features{suffix}"
    with monkeypatch.context() as crash:
        crash.setattr(feature_files, "write_features_file", _killed)
        with pytest.raises(_Killed):
            run_cli(["extract", str(photos), "--output", str(output), "--quiet"], capsys)
    journal = journal_of(output)
    assert not output.exists() and len(journal.read_bytes().splitlines()) == 7  # every photo, streamed
    _cut_short(journal, 3)
    code, _, err = run_cli(["extract", str(photos), "--output", str(output), "--quiet"], capsys)
    assert code == 2 and "holds 3 records" in err and "--resume" in err and not output.exists()
    code, _, err = run_cli(["extract", str(photos), "--output", str(output), "--resume"], capsys)
    assert code == 1 and "6x1280 features" in err and "zz_broken.jpg" in err, err
    resumed = load_features(output)
    assert resumed.paths == expected.paths and not journal.exists()
    assert [(Path(path).name, error.type) for path, error in resumed.failures] == [
        ("zz_broken.jpg", "CorruptImageError")
    ]
    np.testing.assert_allclose(resumed.features, expected.features, atol=1e-5)

    again = ["extract", str(photos), "--output", str(output), "--quiet"]
    code, _, err = run_cli(again, capsys)
    assert code == 2 and "--overwrite" in err  # a finished file is never replaced unasked
    assert run_cli([*again, "--resume"], capsys)[0] == 0  # nothing left to do
    assert run_cli([*again, "--overwrite"], capsys)[0] == 1 and load_features(output).paths == expected.paths


class _Killed(BaseException):
    pass


def _killed(*args: object) -> None:
    raise _Killed


def test_extract_writes_names_that_are_not_utf8(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parquet's text is UTF-8: a Latin-1 name is written with its byte escaped, as Python shows it; the
    npz keeps the name Python gives it."""
    import os

    from imagenet_zoo.jobs.features import load_features

    folder = tmp_path / "photos"
    folder.mkdir()
    latin1 = folder / os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(SAMPLE[0], latin1)
    for suffix, name in ((".parquet", str(folder / "caf\\xe9.jpg")), (".npz", str(latin1))):
        output = tmp_path / f"f{suffix}"
        code, _, err = run_cli(["extract", str(folder), "--output", str(output), "--quiet"], capsys)
        assert code == 0 and "Traceback" not in err, err
        assert load_features(output).paths == [name]


def test_a_class_name_that_is_not_utf8_is_written_resumed_and_drawn(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train` names a bundle's classes after its folders, and a folder may be named caf\\xe9: the class
    is written back as its own bytes (CSV), resumed, drawn on the contact sheet and shown as an escape."""
    import os

    from tests.fakes import constant_bundle

    cafe = os.fsdecode(b"caf\xe9")
    bundle = constant_bundle(tmp_path / "bundle", cafe, [cafe, "plain"])
    photos = sample_folder(tmp_path / "photos", 2)
    output, sheet = tmp_path / "r.csv", tmp_path / "sheet.jpg"
    argv = ["classify", str(photos), "--model", str(bundle), "--output", str(output), "--quiet"]
    code, _, err = run_cli([*argv, "--sheet", str(sheet)], capsys)
    assert code == 0 and "Traceback" not in err and Image.open(sheet).format == "JPEG", err
    with output.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        assert [row["top1_label"] for row in csv.DictReader(f)] == [cafe, cafe]
    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0 and "skipped 2" in err
    code, out, _ = run_cli(["classify", str(photos), "--model", str(bundle)], capsys)
    assert code == 0 and "caf\\udce9" in out


def test_a_features_job_recorded_by_an_earlier_version_still_resumes() -> None:
    """Earlier versions recorded the features task as "extract", the command's name."""
    from imagenet_zoo.errors import UsageError
    from imagenet_zoo.jobs.identity import check_identity

    current = {"task": "features", "model": "efficientnet_lite0"}
    check_identity({"task": "extract", "model": "efficientnet_lite0"}, current, where="f.npz")
    with pytest.raises(UsageError, match="the command was 'classify'"):
        check_identity({"task": "classify", "model": "efficientnet_lite0"}, current, where="f.npz")


def test_a_json_lines_resume_reads_the_file_a_line_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It read the whole file as text and split it: three times an extract journal's gigabytes."""
    from imagenet_zoo.jobs.results import RecordsFile

    def whole(*args: object, **kwargs: object) -> str:
        raise AssertionError("the whole file read at once")

    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b'{"path": "a"}\n{"path": "b\\u2028"}\n{"path": "c')  # a crash mid-record
    unended = tmp_path / "unended.jsonl"
    unended.write_bytes(b'{"path": "a"}')  # another tool's last record, without its new line
    monkeypatch.setattr(Path, "read_text", whole)
    with RecordsFile(cut, columns=[], resume=True) as records:
        assert records.done == {"a", "b\u2028"}
        records.write_record({"path": "c"})
    with RecordsFile(unended, columns=[], resume=True) as records:
        assert records.done == {"a"}
        records.write_record({"path": "b"})
    assert cut.read_bytes() == b'{"path": "a"}\n{"path": "b\\u2028"}\n{"path": "c"}\n'
    assert unended.read_bytes() == b'{"path": "a"}\n{"path": "b"}\n'

"""eval (accuracy of labelled photos, three ways of labelling) and compare (models side by side)."""

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from imagenet_zoo.jobs.compare import compare_models
from imagenet_zoo.jobs.evaluate import labelled_photos
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.registry import Registry, default_registry
from tests.conftest import SAMPLE_DIR, run_cli, sample_folder, skimage_photo

SAMPLE = sorted(SAMPLE_DIR.iterdir())


def test_eval_reproduces_the_reference_accuracy_on_the_shared_sample(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    per_photo = tmp_path / "per-photo.jsonl"
    code, out, _ = run_cli(["eval", str(SAMPLE_DIR), "--format", "json", "--output", str(per_photo)], capsys)
    assert code == 0
    [row] = json.loads(out)
    assert {"model", "n", "top1", "top5", "failed"} <= set(row)
    assert (row["model"], row["n"], row["failed"]) == ("efficientnet_lite0", 200, 0)
    assert row["top1"] >= 0.88 and row["top5"] >= 0.97
    rows = [json.loads(line) for line in per_photo.read_text().splitlines()]
    assert len(rows) == 200 and sum(r["correct_top1"] for r in rows) == round(row["top1"] * 200)
    assert rows[0]["label"] == 0 and rows[0]["path"].endswith("n01440764_tench.JPEG")


def test_labels_from_synset_folders_and_from_a_csv(tmp_path: Path) -> None:
    val = tmp_path / "val"
    for i, file in enumerate(SAMPLE[:4]):
        synset_dir = val / file.name[:9]
        synset_dir.mkdir(parents=True)
        shutil.copy(file, synset_dir / f"ILSVRC2012_val_{i:08d}.JPEG")
    (val / "stray.jpg").write_bytes(b"x")  # no label anywhere: left out, and reported
    photos, unlabelled = labelled_photos(val)
    assert [p.label for p in photos] == [0, 5, 10, 15] and unlabelled == [str(val / "stray.jpg")]

    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerow([str(SAMPLE[0]), "n01440764"])  # absolute path, synset label
        writer.writerow(
            ["val/n01496331/ILSVRC2012_val_00000001.JPEG", "5"]
        )  # relative to the CSV, index label
        writer.writerow(["val/stray.jpg", "not-a-class"])
    photos, unlabelled = labelled_photos(labels)
    assert [(Path(p.path).name, p.label) for p in photos] == [
        ("n01440764_tench.JPEG", 0),
        ("ILSVRC2012_val_00000001.JPEG", 5),
    ]
    assert unlabelled == [str(tmp_path / "val" / "stray.jpg")]


def test_eval_counts_broken_photos_as_failed_and_wrong(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = sample_folder(tmp_path / "labelled", 3, broken="n01440764_broken.JPEG")
    code, out, _ = run_cli(["eval", str(folder), "--format", "json"], capsys)
    [row] = json.loads(out)
    assert code == 0 and row["n"] == 4 and row["failed"] == 1 and row["top1"] <= 0.75


def test_eval_reports_models_without_weights(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["eval", str(SAMPLE_DIR), "--model", "resnet50", "--format", "json"], capsys)
    assert code == 1
    assert json.loads(out) == [
        {"model": "resnet50", "error": "weights missing: imagenet-zoo weights fetch resnet50"}
    ]


def test_eval_needs_labelled_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cat.jpg").write_bytes(b"x")
    assert run_cli(["eval", str(tmp_path)], capsys)[0] == 2
    assert run_cli(["eval", str(tmp_path / "missing")], capsys)[0] == 2


def test_compare_reports_missing_models_with_the_command_to_fetch_them(
    with_lite0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = [str(skimage_photo("coffee.png")), str(SAMPLE[0])]
    code, out, _ = run_cli(["compare", *photos, "--format", "json", "--top", "2"], capsys)
    assert code == 0
    report = json.loads(out)
    status = {m["model"]: m for m in report["models"]}
    assert status["efficientnet_lite0"] == {"model": "efficientnet_lite0", "ready": True, "fetch": None}
    assert status["vgg19"] == {"model": "vgg19", "ready": False, "fetch": "imagenet-zoo weights fetch vgg19"}
    coffee = report["photos"][0]
    [answer] = coffee["answers"]
    assert answer["predictions"][0]["label"] == "espresso" and len(answer["predictions"]) == 2
    assert answer["latency_ms"] > 0
    assert coffee["agreement"] == {"label": "espresso", "models": ["efficientnet_lite0"], "all_agree": True}
    code, out, _ = run_cli(["compare", photos[0], "--models", "lite0,vgg16"], capsys)
    assert "weights missing: imagenet-zoo weights fetch vgg16" in out and "espresso" in out


def test_compare_agreement_between_models(with_lite0: Path) -> None:
    lite0 = default_registry().get("lite0")
    squash = replace(
        lite0,
        spec=replace(
            lite0.spec,
            name="lite0_squash",
            aliases=(),
            data_config=replace(lite0.spec.data_config, resize_mode="squash"),
        ),
    )
    registry = Registry([lite0, squash])
    photos = [str(skimage_photo("coffee.png")), str(skimage_photo("chelsea.png"))]
    statuses, comparisons = compare_models(photos, list(registry), LoadConfig(), top=3)
    assert [s.ready for s in statuses] == [True, True]
    coffee = comparisons[0].agreement()
    assert coffee == {
        "label": "espresso",
        "models": ["efficientnet_lite0", "lite0_squash"],
        "all_agree": True,
    }
    assert all(len(c.answers) == 2 for c in comparisons)


def test_a_label_that_names_a_class_means_that_class(tmp_path: Path) -> None:
    """A bundle's classes named 1 .. 12: the label 2 was read as index 2, the class named 11, and the
    ground truth was silently wrong; "³" passed isdigit() and int() raised."""
    from imagenet_zoo.data.labels import ClassLabel

    labels = [ClassLabel(i, str(i + 1), str(i + 1)) for i in range(12)]
    table = tmp_path / "labels.csv"
    table.write_text("path,label\na.jpg,2\nb.jpg,12\nc.jpg,³\nd.jpg,13\n", encoding="utf-8")
    photos, unlabelled = labelled_photos(table, labels)
    assert [(Path(p.path).name, p.label) for p in photos] == [("a.jpg", 1), ("b.jpg", 11)]
    assert [Path(p).name for p in unlabelled] == ["c.jpg", "d.jpg"]
    imagenet, _ = labelled_photos(table)  # ImageNet's classes have no such names: indices
    assert [(Path(p.path).name, p.label) for p in imagenet] == [("a.jpg", 2), ("b.jpg", 12), ("d.jpg", 13)]


def test_eval_never_replaces_a_results_file_without_overwrite(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval --output` replaced whatever the file held, a classify job's results included."""
    folder = sample_folder(tmp_path / "photos", 3)
    output = tmp_path / "per-photo.jsonl"
    output.write_text('{"path": "a long job.jpg"}\n')
    code, _, err = run_cli(["eval", str(folder), "--output", str(output)], capsys)
    assert code == 2 and "holds 1 record" in err and "--overwrite" in err and "--resume" not in err, err
    assert output.read_text() == '{"path": "a long job.jpg"}\n'
    assert run_cli(["eval", str(folder), "--output", str(output), "--overwrite"], capsys)[0] == 0
    assert len(output.read_text().splitlines()) == 3

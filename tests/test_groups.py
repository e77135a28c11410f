"""Is it a dog at all? WordNet groups over ImageNet's classes, zero-shot."""

import json
from pathlib import Path

import numpy as np
import pytest

import imagenet_zoo
from imagenet_zoo.errors import UsageError
from tests.conftest import SAMPLE_DIR, SHARED, run_cli

SHIPPED = Path(imagenet_zoo.__file__).parent / "data" / "labels" / "imagenet1k_wordnet_hierarchy.tsv"


def test_the_shipped_hierarchy_is_the_shared_one_with_its_provenance() -> None:
    shared = SHARED / "data" / "imagenet1k_wordnet_hierarchy.tsv"
    assert SHIPPED.read_bytes() == shared.read_bytes()
    assert SHIPPED.read_text().startswith("# WordNet 3.0 noun hierarchy")


def test_the_hierarchy_holds_every_class_once_under_entity() -> None:
    hierarchy = imagenet_zoo.wordnet()
    assert len(hierarchy.synsets) == 1860
    assert hierarchy.classes_under("n00001740") == frozenset(range(1000))
    dog = hierarchy.group("dog")
    assert dog.id == "n02084071" and hierarchy.classes_under(dog.id) == frozenset(range(151, 269))
    assert hierarchy.group("n02084071") == dog and hierarchy.group("Domestic Dog") == dog


def test_an_ambiguous_or_unknown_word_is_a_usage_error_that_lists_candidates() -> None:
    hierarchy = imagenet_zoo.wordnet()
    with pytest.raises(UsageError, match=r"n02121620: cat, true cat.*n02127808: big cat, cat"):
        hierarchy.group("cat")
    with pytest.raises(UsageError, match="no group is named 'unicorn'"):
        hierarchy.group("unicorn")


def test_group_scores_sum_the_softmax_of_their_classes() -> None:
    hierarchy = imagenet_zoo.wordnet()
    probabilities = np.zeros(1000, np.float32)
    probabilities[[151, 200, 10]] = [0.5, 0.25, 0.25]  # two dogs and a bird (brambling)
    dog, bird = (hierarchy.group(w) for w in ("dog", "bird"))
    scores = hierarchy.scores(probabilities, [dog, bird])
    assert [(s.name, s.classes) for s in scores] == [("dog", 118), ("bird", 59)]
    assert [s.score for s in scores] == pytest.approx([0.75, 0.25])
    tops = hierarchy.top_groups(probabilities, depth=hierarchy.depths[dog.id], k=3)
    assert [t.score for t in tops] == sorted((t.score for t in tops), reverse=True)
    assert dog.id in [t.synset for t in tops] and tops[0].score == pytest.approx(1.0)  # e.g. vertebrate


def test_classify_groups_and_the_groups_command(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dogs = sorted(SAMPLE_DIR.glob("n0208*"))[:2]
    argv = ["classify", *map(str, dogs), "--groups", "dog,bird", "--groups", "n02121620", "--format", "json"]
    code, out, _ = run_cli(argv, capsys)
    results = json.loads(out)
    assert code == 0 and [g["name"] for g in results[0]["groups"]] == ["dog", "bird", "cat"]
    assert all(r["groups"][0]["score"] > 0.9 and r["groups"][0]["classes"] == 118 for r in results)
    code, _, err = run_cli(["classify", str(dogs[0]), "--groups", "cat"], capsys)
    assert code == 2 and "n02127808" in err
    code, out, _ = run_cli(["groups", "cat", "--format", "json"], capsys)
    assert code == 0 and {"n02121620", "n02127808"} <= {row["synset"] for row in json.loads(out)}


def test_a_bundle_refuses_groups(tmp_path: Path) -> None:
    from tests.fakes import FakeEngine, constant_bundle

    bundle = imagenet_zoo.resolve_model(constant_bundle(tmp_path / "b", "dog"))
    classifier = imagenet_zoo.Classifier(bundle.spec, FakeEngine())
    with pytest.raises(UsageError, match="classes of its own"):
        classifier.classify(np.zeros((8, 8, 3), np.uint8), groups=["dog"])


@pytest.mark.slow
def test_dog_or_not_with_no_training(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The answer to "is it a dog?" for most users: the dog group of the ImageNet head, zero-shot."""
    code, out, _ = run_cli(["eval", str(SAMPLE_DIR), "--group", "dog", "--format", "json"], capsys)
    [row] = json.loads(out)
    assert code == 0 and row["group"]["synset"] == "n02084071"
    assert row["group"]["true_positives"] + row["group"]["false_negatives"] == 23
    assert row["group"]["balanced_accuracy"] >= 0.95


def test_the_service_reports_groups() -> None:
    from fastapi.testclient import TestClient

    from imagenet_zoo.server import create_app
    from tests.fakes import fake_settings, png_bytes

    upload = {"file": ("a.png", png_bytes(), "image/png")}
    with TestClient(create_app(fake_settings())) as client:
        ok = client.post("/v1/classify", params={"groups": "dog,bird"}, files=upload)
        batch = client.post(
            "/v1/classify/batch", params={"groups": "n02084071"}, files=[("file", upload["file"])] * 2
        )
        ambiguous = client.post("/v1/classify", params={"groups": "cat"}, files=upload)
        plain = client.post("/v1/classify", files=upload)
    assert ok.status_code == 200 and [g["name"] for g in ok.json()["groups"]] == ["dog", "bird"]
    assert ok.json()["path"] == "a.png" and all(r["groups"][0]["synset"] == "n02084071" for r in batch.json())
    assert ambiguous.status_code == 422 and "n02127808" in ambiguous.json()["error"]["message"]
    assert plain.status_code == 200 and "groups" not in plain.json()


def test_top_groups_rank_the_most_likely_kinds(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dog = sorted(SAMPLE_DIR.glob("n0208*"))[0]
    argv = ["classify", str(dog), "--top-groups", "3", "--format", "json"]  # default depth 6
    code, out, _ = run_cli(argv, capsys)
    [result] = json.loads(out)
    scores = [g["score"] for g in result["groups"]]
    assert code == 0 and len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert result["groups"][0]["name"] == "animal" and scores[0] > 0.9
    depth = imagenet_zoo.wordnet().depths
    assert {depth[g["synset"]] for g in result["groups"]} == {6}

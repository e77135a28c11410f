from imagenet_zoo import imagenet1k
from tests.conftest import SAMPLE_DIR


def test_the_class_index_has_1000_classes_in_sorted_synset_order() -> None:
    labels = imagenet1k()
    assert [label.index for label in labels] == list(range(1000))
    synsets = [label.synset for label in labels]
    assert synsets == sorted(synsets) and len(set(synsets)) == 1000
    assert (labels[0].synset, labels[0].name) == ("n01440764", "tench")
    assert (labels[967].synset, labels[967].name) == ("n07920052", "espresso")
    assert labels[282].name == "tiger cat"


def test_labels_match_every_shared_imagenet_photo_name() -> None:
    by_synset = {label.synset: label for label in imagenet1k()}
    files = sorted(SAMPLE_DIR.iterdir())
    assert len(files) == 200
    for file in files:
        synset, class_name = file.stem.split("_", 1)
        label = by_synset[synset]
        assert label.index % 5 == 0
        assert label.name.replace(" ", "_") == class_name

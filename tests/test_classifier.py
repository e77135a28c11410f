"""Post-processing a whole batch at once: every row's top-k from one partition, ranked exactly as a
stable sort of each row ranks it (ties to the lower class index), records as one row at a time gives."""

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from imagenet_zoo.classifier import PostPlan, probabilities_of, top_k_indices
from imagenet_zoo.pipeline import Batch, Forward
from imagenet_zoo.records import ErrorInfo

# Few distinct values: rows full of ties, at the k-th place too; NaN where a broken model gives it.
TIED = st.sampled_from([0.0, 1e-30, 0.1, 0.25, 0.5, float("nan")])


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=TIED), st.data())
def test_the_batch_top_k_ranks_as_a_stable_sort_of_each_row(
    probabilities: np.ndarray, data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, probabilities.shape[1]))
    expected = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    assert top_k_indices(probabilities, k).tolist() == expected.tolist()


def test_a_batch_gives_the_records_one_row_at_a_time_gives(lite0_classifier: object) -> None:
    from imagenet_zoo.classifier import Classifier

    assert isinstance(lite0_classifier, Classifier)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (6, 1000)).astype(np.float32)
    logits[2, :10] = logits[2].max() + 1  # ten tied at the top: the five lowest indices win
    info = lite0_classifier.preprocess(np.zeros((40, 30, 3), np.uint8))
    assert not isinstance(info, ErrorInfo)
    broken = ErrorInfo("UnreadableImageError", "not an image")
    prepared = [info] * 3 + [broken] + [info] * 3
    batch = Batch(list("abcdefg"), prepared, Forward(logits, None))
    plan = PostPlan(top=5)
    together = list(lite0_classifier.postprocess(batch, plan))
    rows = iter(logits)
    alone = [
        Batch([name], [item], None if isinstance(item, ErrorInfo) else Forward(next(rows)[None], None))
        for name, item in zip("abcdefg", prepared, strict=True)
    ]
    one_by_one = [record for one in alone for record in lite0_classifier.postprocess(one, plan)]
    assert together == one_by_one
    assert together[3].error == broken
    assert [p.index for p in together[2].predictions] == [0, 1, 2, 3, 4]
    scores = [p.score for p in together[0].predictions]
    assert scores == sorted(scores, reverse=True)
    assert np.isclose(sum(probabilities_of(logits[0])), 1, atol=1e-5)


def test_the_post_keywords_are_the_post_options() -> None:
    from dataclasses import fields
    from typing import get_type_hints

    from imagenet_zoo.pipeline import PostKeywords, PostOptions

    assert list(get_type_hints(PostKeywords)) == [field.name for field in fields(PostOptions)]

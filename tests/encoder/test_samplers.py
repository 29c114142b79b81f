from __future__ import annotations

import numpy as np

from twinsearch.encoder.samplers import EpisodeSampler, PairBatchSampler, PKSampler, classic_pairs


def test_classic_pairs_one_positive_and_one_negative_per_image():
    labels = np.repeat(np.arange(5), 4)
    a, b, y = classic_pairs(labels, seed=3)
    assert len(a) == 2 * len(labels) and y.sum() == len(labels)
    assert np.all((labels[a] == labels[b]) == (y == 1)) and np.all(a != b)
    for i in range(len(labels)):
        assert sorted(y[a == i]) == [0, 1]
    assert np.array_equal(classic_pairs(labels, seed=3)[1], b)


def test_pair_batches_layout():
    labels = np.repeat(np.arange(4), 3)
    batch = next(iter(PairBatchSampler(labels, pairs_per_batch=5)))
    assert batch.shape == (10,)


def test_pk_batches():
    labels = np.repeat(np.arange(10), [1] + [5] * 9)
    batches = list(PKSampler(labels, p=4, k=3, seed=0, batches=5))
    assert len(batches) == 5
    for b in batches:
        lab = labels[b].reshape(4, 3)
        assert (lab == lab[:, :1]).all() and len(set(lab[:, 0])) == 4


def test_episodes_within_group():
    labels = np.repeat(np.arange(12), 4)
    groups = np.array([0] * 8 + [1] * 4)
    eps = list(EpisodeSampler(labels, way=5, shot=1, query=2, episodes=50, groups=groups, within_group=True))
    sizes = {len(s) for s, _ in eps}
    assert sizes == {5, 4}  # group 1 has only 4 classes
    for support, query in eps:
        cls = labels[support[:, 0]]
        assert len(set(groups[cls])) == 1
        assert (labels[query] == cls[:, None]).all() and not set(support.ravel()) & set(query.ravel())


def test_pk_batches_from_few_groups():
    labels = np.repeat(np.arange(12), 3)
    groups = np.repeat(np.arange(4), 3)  # 4 groups of 3 classes
    for b in PKSampler(labels, p=6, k=2, seed=1, batches=20, class_groups=groups, groups_per_batch=1):
        classes = np.unique(labels[b])
        assert len(classes) == 3 and len(set(groups[classes])) == 1


def test_pk_batches_where_every_class_is_its_own_group_are_plain():
    """A flat folder of classes makes each class its own group: drawing classes by group would give batches
    of `groups_per_batch` classes (2 x K images under the characters preset); they take P classes instead."""
    labels = np.repeat(np.arange(12), 3)
    for b in PKSampler(labels, p=6, k=2, seed=1, batches=20, class_groups=np.arange(12), groups_per_batch=2):
        assert len(np.unique(labels[b])) == 6 and len(b) == 12

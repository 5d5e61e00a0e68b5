from ember.batching import GroupedBatchSampler, grouped_batches, length_buckets, map_in_buckets


def test_length_buckets_and_order_restored():
    assert length_buckets([5, 1, 4, 2], 2) == [[1, 3], [2, 0]]
    assert length_buckets([5, 1, 4], 2, sort=False) == [[0, 1], [2]]
    assert map_in_buckets(["ccc", "a", "bb", "dddd"], lambda b: [len(s) for s in b], 3) == [3, 1, 2, 4]


def test_grouped_batches_cover_everything_once_and_cut_padding():
    import random

    lengths = [random.Random(i).randint(3, 60) for i in range(1000)]
    batches = grouped_batches(lengths, 32, seed=1)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = sum(len(b) * max(lengths[i] for i in b) for b in (list(range(i, min(i + 32, 1000))) for i in range(0, 1000, 32)))
    assert padded < 0.7 * plain
    assert grouped_batches(lengths, 32, seed=1) == batches and grouped_batches(lengths, 32, seed=2) != batches


def test_sampler_reshuffles_each_epoch():
    s = GroupedBatchSampler(list(range(100)), 10, seed=0)
    first, second = list(s), list(s)
    assert len(first) == len(s) == 10 and first != second

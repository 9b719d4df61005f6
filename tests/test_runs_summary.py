"""A run's summary against Captum's Summarizer and ClassSummarizer fed the same rows; the merge laws of the
streaming statistics (any split of the rows, merged in any grouping, gives the statistics of the whole)."""

import numpy as np
import pytest
import torch
from captum.attr import ClassSummarizer, Count, Max, Mean, Min, MSE, StdDev, Summarizer, Var
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

import attrfx
from attrfx.runs import summary as stats
import _runs_data
from models import MultiInput, seeded

CAPTUM_STATS = [Mean(), Var(), Var(order=1), StdDev(), StdDev(order=1), Min(), Max(), Count(), MSE()]


def captum_summary(rows):
    """Captum's Summarizer updated with one stored row at a time (it summarises over ``update`` calls)."""
    summarizer = Summarizer(CAPTUM_STATS)
    for row in rows:
        summarizer.update(row)
    return summarizer.summary


def assert_matches_captum(ours, rows):
    theirs = captum_summary(rows)
    close = dict(rtol=1e-10, atol=1e-13)
    assert ours.count == theirs["count"]
    np.testing.assert_allclose(ours.mean, theirs["mean"].numpy(), **close)
    np.testing.assert_allclose(ours.variance, theirs["variance"].numpy(), **close)
    np.testing.assert_allclose(ours.sample_variance, theirs["sample_variance"].numpy(), **close)
    np.testing.assert_allclose(ours.std, theirs["std_dev"].numpy(), **close)
    np.testing.assert_allclose(np.sqrt(ours.sample_variance), theirs["sample_std_dev"].numpy(), **close)
    np.testing.assert_allclose(ours.variance * ours.count, theirs["mse"].numpy(), **close)  # Captum's MSE is M2
    np.testing.assert_array_equal(ours.minimum, theirs["min"].numpy())
    np.testing.assert_array_equal(ours.maximum, theirs["max"].numpy())
    np.testing.assert_allclose(ours.mean_abs, captum_summary(rows.abs())["mean"].numpy(), **close)


@pytest.mark.parametrize("chunk_size", [4, 12, 48])
def test_the_summary_is_captums_over_the_stored_rows(tmp_path, chunk_size):
    run = attrfx.attribute_dataset(attrfx.integrated_gradients, _runs_data.model(), _runs_data.batches(4),
                                   out=tmp_path / "run", target="labels", n_steps=8, chunk_size=chunk_size,
                                   show_progress=False)
    rows = torch.from_numpy(run.attributions[:])
    assert_matches_captum(run.summary, rows)


def test_per_class_means_and_counts_are_captums_class_summarizer(tmp_path):
    run = attrfx.attribute_dataset(attrfx.saliency, _runs_data.model(), _runs_data.batches(4), out=tmp_path / "run",
                                   target="labels", abs=False, chunk_size=8, show_progress=False)
    summarizer = ClassSummarizer([Mean(), Count()])
    for start in range(0, 48, 4):  # Captum's ClassSummarizer takes a batch and its labels
        summarizer.update(torch.from_numpy(run.attributions[start:start + 4]),
                          run.labels[start:start + 4].tolist())  # ints: Captum keys a dict by label
    per_class = summarizer.class_summaries
    assert sorted(per_class) == [k for k, n in enumerate(run.summary.class_counts) if n]
    for k, (theirs,) in per_class.items():  # one summary per input
        assert run.summary.class_counts[k] == theirs["count"]
        np.testing.assert_allclose(run.summary.class_means[k], theirs["mean"].numpy(), rtol=1e-10, atol=1e-13)


def test_classes_are_the_targets_where_the_data_has_no_labels(tmp_path):
    x, _ = _runs_data.data().tensors
    run = attrfx.attribute_dataset(attrfx.saliency, _runs_data.model(), list(x.split(8)), out=tmp_path / "run",
                                   target="predicted", show_progress=False)
    predicted = _runs_data.model()(x).argmax(1).numpy()
    np.testing.assert_array_equal(run.summary.class_counts, np.bincount(predicted, minlength=3))
    np.testing.assert_allclose(run.summary.class_means[predicted[0]],
                               run.attributions[:][predicted == predicted[0]].mean(0), rtol=1e-12)


def test_tuple_inputs_are_summarised_per_input_as_captum_does(tmp_path):
    net = seeded(MultiInput)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g,
                                                                                 dtype=torch.float64))
               for _ in range(3)]
    run = attrfx.attribute_dataset(attrfx.saliency, net, [(b,) for b in batches], out=tmp_path / "run", target=1,
                                   abs=False, show_progress=False)
    summarizer = Summarizer([Mean(), Var()])
    for i in range(12):
        summarizer.update(tuple(torch.from_numpy(a[i]) for a in run.attributions))
    for ours, theirs in zip(run.summary, summarizer.summary):
        np.testing.assert_allclose(ours.mean, theirs["mean"].numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(ours.variance, theirs["variance"].numpy(), rtol=1e-10, atol=1e-13)
    assert run.summary[1].class_counts.tolist() == [0, 12]  # no labels: the classes are the targets (all 1)


rows_strategy = arrays(np.float64, st.tuples(st.integers(2, 24), st.integers(1, 3)),
                       elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False))


@given(rows=rows_strategy, cuts=st.lists(st.integers(0, 24), max_size=4), data=st.data())
def test_merging_any_split_gives_the_statistics_of_the_whole(rows, cuts, data):
    bounds = sorted({0, len(rows), *[c % (len(rows) + 1) for c in cuts]})
    parts = [stats.moments(rows[a:b]) if b > a else stats.no_rows(rows.shape[1:]) for a, b in zip(bounds, bounds[1:])]
    order = data.draw(st.permutations(range(len(parts))))
    merged = None
    for i in order:
        merged = stats.merge(merged, parts[i])
    whole = stats.moments(rows)
    assert merged.count == whole.count
    scale = 1 + np.abs(rows).max()
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-8, atol=1e-9 * scale ** 2)
    np.testing.assert_allclose(merged.mean_abs, whole.mean_abs, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_array_equal(merged.minimum, whole.minimum)
    np.testing.assert_array_equal(merged.maximum, whole.maximum)


@given(rows=rows_strategy, data=st.data())
def test_class_sums_add_up_over_any_split(rows, data):
    classes = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(rows), max_size=len(rows))))
    cut = data.draw(st.integers(0, len(rows)))
    added = stats.add_class_sums(stats.class_sums(rows[:cut], classes[:cut]), stats.class_sums(rows[cut:], classes[cut:]))
    whole = stats.class_sums(rows, classes)
    np.testing.assert_array_equal(added.counts, whole.counts)
    np.testing.assert_allclose(added.sums, whole.sums, rtol=1e-12, atol=1e-9)
    means = stats.summary(stats.moments(rows), whole).class_means
    for k in range(len(whole.counts)):
        if whole.counts[k]:
            np.testing.assert_allclose(means[k], rows[classes == k].mean(0), rtol=1e-9, atol=1e-9)
        else:
            assert np.isnan(means[k]).all()

"""Negative samples (CorMulT 4.2): each strategy changes exactly what it says, and says so."""

import pytest
import torch

from cormult_lib.config import DataConfig
from cormult_lib.correlation.negatives import (
    PAIRS,
    WORD_ALIGNED_STEPS_PER_SECOND,
    NegativeBatch,
    changed_pairs,
    make_negatives,
    roll_valid,
)
from cormult_lib.data.dataset import make_loader
from cormult_lib.data.synthetic import SyntheticCorpus

DIMS = {"T": 6, "A": 5, "V": 4}


def make_batch(
    lengths: list[int],
    time: int = 12,
    mods: str = "TAV",
    start_padded: bool = False,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random word-aligned features with zero padding; every modality shares the lengths."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.arange(time)[None, :]
    length = torch.tensor(lengths)[:, None]
    mask = steps >= time - length if start_padded else steps < length
    features, masks = {}, {}
    for m in mods:
        x = torch.randn(len(lengths), time, DIMS[m], generator=g) * (1 + torch.arange(DIMS[m]))
        features[m] = x * mask.unsqueeze(-1)
        masks[m] = mask.clone()
    return features, masks


def valid(x: torch.Tensor, mask: torch.Tensor, i: int) -> torch.Tensor:
    return x[i][mask[i]]


def test_strategy_a_takes_one_modality_from_another_sample():
    features, masks = make_batch([12, 9, 5, 7, 12, 3, 10, 8])
    masks["A"][1, 9:] = True  # give one modality its own length so the mask must travel too
    neg = make_negatives(features, masks, "A", torch.Generator().manual_seed(1))
    assert neg.strategy == ["A"] * 8
    assert set(neg.modality) <= set("TAV") and len(set(neg.modality)) > 1
    for i, (m, j) in enumerate(zip(neg.modality, neg.source.tolist(), strict=True)):
        assert j != i and 0 <= j < 8
        assert torch.equal(neg.features[m][i], features[m][j])
        assert torch.equal(neg.masks[m][i], masks[m][j])
        for other in set("TAV") - {m}:
            assert torch.equal(neg.features[other][i], features[other][i])
            assert torch.equal(neg.masks[other][i], masks[other][i])
            assert not neg.changed[other][i]
        assert neg.changed[m][i]
    assert not neg.unchanged.any()
    assert all(torch.equal(s, torch.zeros(8, dtype=torch.long)) for s in neg.shift.values())


def test_strategy_a_flags_identical_source_as_unchanged():
    features, masks = make_batch([5, 5])
    for m in features:  # two identical samples: mixing them changes nothing
        features[m][1] = features[m][0]
    neg = make_negatives(features, masks, "A", torch.Generator().manual_seed(0))
    assert neg.source.tolist() == [1, 0]
    assert neg.unchanged.all() and neg.n_unchanged == 2
    assert not any(p.any() for p in changed_pairs(neg, "TAV").values())


@pytest.mark.parametrize(
    ("shift_seconds", "steps_per_second", "k"),
    [(1.0, None, 3), (0.5, {"A": 10.0, "V": 8.0}, 5), (0.9, {"A": 3.0}, 3), (0.05, {"A": 3.0}, 1)],
)
def test_strategy_b_rolls_valid_steps_by_the_asked_amount(shift_seconds, steps_per_second, k):
    features, masks = make_batch([12, 10, 8, 11, 9, 12])
    neg = make_negatives(
        features,
        masks,
        "B",
        torch.Generator().manual_seed(0),
        shift_seconds=shift_seconds,
        steps_per_second=steps_per_second,
    )
    expected_k = max(1, round(shift_seconds * (steps_per_second or {"A": 3.0})["A"]))
    assert k == expected_k
    assert neg.strategy == ["B"] * 6 and neg.modality == ["TA"] * 6
    assert neg.shift["A"].tolist() == [k] * 6
    assert neg.shift["T"].abs().tolist() == [1] * 6
    assert neg.shift["V"].tolist() == [0] * 6
    for m in "TAV":
        assert torch.equal(neg.masks[m], masks[m])
        assert torch.equal(neg.features[m][~masks[m]], torch.zeros_like(features[m][~masks[m]]))
        for i in range(6):
            before, after = valid(features[m], masks[m], i), valid(neg.features[m], masks[m], i)
            # Same multiset of frames, each feature sorted over time.
            assert torch.equal(before.sort(0).values, after.sort(0).values)
            rolled = torch.roll(before, int(neg.shift[m][i]), 0)
            assert torch.equal(after, rolled)
    assert neg.changed["T"].all() and neg.changed["A"].all() and not neg.changed["V"].any()
    pairs = changed_pairs(neg, "TAV")
    assert all(p.all() for p in pairs.values())


def test_strategy_b_works_on_start_padded_masks():
    end_f, end_m = make_batch([12, 7, 4, 9])
    start_f, start_m = make_batch([12, 7, 4, 9], start_padded=True)
    neg = make_negatives(start_f, start_m, "B", torch.Generator().manual_seed(0))
    reference = make_negatives(end_f, end_m, "B", torch.Generator().manual_seed(0))
    for m in "TAV":
        assert torch.equal(neg.masks[m], start_m[m])
        assert torch.equal(neg.shift[m], reference.shift[m])
        assert torch.equal(neg.features[m][~start_m[m]], start_f[m][~start_m[m]])
        for i in range(4):
            before = valid(start_f[m], start_m[m], i)
            expected = torch.roll(before, int(neg.shift[m][i]), 0)
            assert torch.equal(valid(neg.features[m], start_m[m], i), expected)


def test_roll_valid_matches_torch_roll_on_any_mask():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 9, 2, generator=g)
    mask = torch.rand(50, 9, generator=g) < 0.6  # holes anywhere, some rows empty
    shifts = torch.randint(-12, 12, (50,), generator=g)
    out = roll_valid(x, mask, shifts)
    for i in range(50):
        assert torch.equal(out[i][~mask[i]], x[i][~mask[i]])
        assert torch.equal(out[i][mask[i]], torch.roll(x[i][mask[i]], int(shifts[i]), 0))


def test_strategy_b_counts_samples_it_cannot_shift():
    features, masks = make_batch([1, 2, 4, 12, 0])
    neg = make_negatives(features, masks, "B", torch.Generator().manual_seed(0))
    assert neg.unchanged.tolist() == [True, False, False, False, True]
    assert neg.n_unchanged == 2
    assert neg.summary().loc["B", "unchanged"] == 2
    # Two steps: every roll is by one, so text and audio move together; only V stays apart.
    assert neg.shift["A"][1] == 1 and neg.shift["T"][1] % 2 == 1
    # Four steps and k = 3: advancing text (-1 = +3) would keep it in sync with the audio, so
    # text is delayed by one instead.
    assert neg.shift["A"][2] == 3 and neg.shift["T"][2] == 1
    assert neg.shift["T"][3] == -1
    pairs = changed_pairs(neg, "TAV")
    assert pairs[("T", "A")].tolist() == [False, False, True, True, False]
    assert pairs[("T", "V")].tolist() == [False, True, True, True, False]
    assert pairs[("A", "V")].tolist() == [False, True, True, True, False]


@pytest.mark.parametrize(("mods", "rolled"), [("TA", "TA"), ("TV", "TV"), ("AV", "A")])
def test_strategy_b_on_two_modalities(mods, rolled):
    features, masks = make_batch([12, 8, 6], mods=mods)
    neg = make_negatives(features, masks, "B", torch.Generator().manual_seed(0))
    assert neg.modality == [rolled] * 3
    av = rolled.replace("T", "")
    assert neg.shift[av].tolist() == [round(1.0 * WORD_ALIGNED_STEPS_PER_SECOND)] * 3
    for m in mods:
        assert bool(neg.changed[m].all()) == (m in rolled)
    (pair,) = changed_pairs(neg, mods).values()
    assert pair.all()


def test_strategy_c_noise_on_valid_steps_of_one_modality():
    features, masks = make_batch([12, 9, 11, 7, 12, 10] * 20, seed=4)
    neg = make_negatives(features, masks, "C", torch.Generator().manual_seed(0), noise_std=0.1)
    assert set(neg.modality) == set("TAV")
    ratios = []
    for i, m in enumerate(neg.modality):
        for other in set("TAV") - {m}:
            assert torch.equal(neg.features[other][i], features[other][i])
        assert torch.equal(
            neg.features[m][i][~masks[m][i]], torch.zeros_like(features[m][i][~masks[m][i]])
        )
        if m != "T":
            before, after = valid(features[m], masks[m], i), valid(neg.features[m], masks[m], i)
            assert (after != before).all()
            ratios.append(((after - before) / before.std(0, unbiased=False)).flatten())
    ratio = torch.cat(ratios)
    assert ratio.std().item() == pytest.approx(0.1, rel=0.1)
    assert ratio.mean().abs().item() < 0.01
    for m in "TAV":
        assert torch.equal(neg.masks[m], masks[m])


def test_strategy_c_replaces_word_vectors_with_other_words_of_the_batch():
    features, masks = make_batch([12, 9, 4, 1, 10] * 8, mods="TA", seed=5)
    neg = make_negatives(features, masks, "C", torch.Generator().manual_seed(2), replace_prob=0.25)
    pool = features["T"][masks["T"]]
    for i, m in enumerate(neg.modality):
        if m != "T":
            continue
        before, after = valid(features["T"], masks["T"], i), valid(neg.features["T"], masks["T"], i)
        replaced = (before != after).any(1)
        assert int(replaced.sum()) == max(1, round(0.25 * len(before)))
        for vector in after[replaced]:
            assert (pool == vector).all(1).any()  # a real word vector of the batch
        assert torch.equal(neg.features["T"][i][~masks["T"][i]], features["T"][i][~masks["T"][i]])
    assert "T" in neg.modality and not neg.unchanged.any()


def test_strategy_c_never_replaces_a_word_by_itself():
    features, masks = make_batch([1, 1], mods="TA")  # two words in the whole batch
    seen = 0
    for seed in range(10):
        neg = make_negatives(features, masks, "C", torch.Generator().manual_seed(seed))
        for i, m in enumerate(neg.modality):
            if m == "T":
                seen += 1
                assert torch.equal(neg.features["T"][i, 0], features["T"][1 - i, 0])
    assert seen > 0


def test_strategy_c_replaces_token_ids_within_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 20, (200,), generator=g)
    mask = torch.arange(20)[None, :] < lengths[:, None]
    ids = torch.randint(1, 30, (200, 20), generator=g) * mask
    audio = torch.randn(200, 20, 3, generator=g) * mask.unsqueeze(-1)
    features, masks = {"T": ids, "A": audio}, {"T": mask, "A": mask}
    neg = make_negatives(features, masks, "C", torch.Generator().manual_seed(1), vocab_size=30)
    new = neg.features["T"]
    assert new.dtype == torch.long
    assert torch.equal(new[~mask], torch.zeros_like(new[~mask]))
    replaced = new != ids
    assert ((new[replaced] >= 2) & (new[replaced] < 30)).all()
    text_rows = torch.tensor([m == "T" for m in neg.modality])
    counts = replaced.sum(1)
    expected = torch.clamp(torch.round(0.15 * lengths), min=1)
    assert torch.equal(counts[text_rows], expected[text_rows])
    assert (counts[~text_rows] == 0).all()
    assert set(new[replaced].tolist()) == set(range(2, 30))  # the whole range is reachable
    with pytest.raises(ValueError, match="vocab_size"):
        make_negatives(features, masks, "C", torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="vocab_size"):
        make_negatives(features, masks, "D", torch.Generator().manual_seed(1), vocab_size=3)
    with pytest.raises(ValueError, match=r"\[0, vocab_size=20\)"):
        make_negatives(features, masks, "C", torch.Generator().manual_seed(1), vocab_size=20)


def test_strategy_d_mixes_a_b_c_in_equal_shares():
    features, masks = make_batch([12, 8, 10] * 200)
    neg = make_negatives(features, masks, "D", torch.Generator().manual_seed(0))
    for s in "ABC":
        assert neg.strategy.count(s) / 600 == pytest.approx(1 / 3, abs=0.06)
    for i, s in enumerate(neg.strategy):
        assert (neg.source[i] >= 0) == (s == "A")
        if s == "B":
            assert neg.modality[i] == "TA"
        else:
            assert neg.modality[i] in {"T", "A", "V"}
    assert not neg.unchanged.any()


def test_same_seed_same_negatives_other_seed_different():
    features, masks = make_batch([12, 8, 10, 5, 11, 7])

    def run(seed: int) -> NegativeBatch:
        return make_negatives(features, masks, "D", torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    assert a.strategy == b.strategy and a.modality == b.modality
    assert torch.equal(a.source, b.source)
    for m in "TAV":
        assert torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.masks[m], b.masks[m])
    assert a.strategy != c.strategy or any(
        not torch.equal(a.features[m], c.features[m]) for m in "TAV"
    )


@pytest.mark.parametrize("mods", ["TA", "TV", "AV"])
def test_two_modality_subsets(mods):
    features, masks = make_batch([12, 9, 7, 10] * 10, mods=mods)
    for strategy in "ABCD":
        neg = make_negatives(features, masks, strategy, torch.Generator().manual_seed(0))
        assert set(neg.features) == set(mods) == set(neg.changed)
        for m in mods:
            assert neg.features[m].shape == features[m].shape
            assert neg.features[m].dtype == features[m].dtype
        assert all(set(letters) <= set(mods) for letters in neg.modality)
        pairs = changed_pairs(neg, mods)
        assert list(pairs) == [p for p in PAIRS if set(p) <= set(mods)]
        assert next(iter(pairs.values())).all()
        assert not neg.unchanged.any()


def test_batch_of_one():
    features, masks = make_batch([6])
    for strategy in "AD":
        with pytest.raises(ValueError, match="at least 2 samples"):
            make_negatives(features, masks, strategy)
    neg = make_negatives(features, masks, "B")
    assert neg.strategy == ["B"] and not neg.unchanged.any()
    neg = make_negatives(features, masks, "C", torch.Generator().manual_seed(0))
    assert neg.strategy == ["C"] and not neg.unchanged.any()


def test_changed_pairs_on_hand_made_negatives():
    masks = {m: torch.ones(4, 6, dtype=torch.bool) for m in "TAV"}
    masks["V"][3, 3:] = False  # V of sample 3 has 3 steps, T and A have 6
    neg = NegativeBatch(
        features={m: torch.zeros(4, 6, 1) for m in "TAV"},
        masks=masks,
        strategy=["A", "C", "B", "B"],
        modality=["V", "T", "TA", "TA"],
        source=torch.tensor([2, -1, -1, -1]),
        # Sample 2: T and A rolled by the same amount mod 6 (-1 and 5): in sync with each
        # other. Sample 3: T delayed by 2 of 6 steps and V by 1 of 3, the same third.
        shift={
            "T": torch.tensor([0, 0, -1, 2]),
            "A": torch.tensor([0, 0, 5, 0]),
            "V": torch.tensor([0, 0, 0, 1]),
        },
        changed={
            "T": torch.tensor([False, True, True, True]),
            "A": torch.tensor([False, False, True, False]),
            "V": torch.tensor([True, False, False, True]),
        },
        unchanged=torch.zeros(4, dtype=torch.bool),
    )
    pairs = changed_pairs(neg, "TAV")
    assert list(pairs) == [("T", "A"), ("T", "V"), ("A", "V")]
    assert pairs[("T", "A")].tolist() == [False, True, False, True]
    assert pairs[("T", "V")].tolist() == [True, True, True, False]
    assert pairs[("A", "V")].tolist() == [True, False, True, True]
    assert list(changed_pairs(neg, "VA")) == [("A", "V")]
    with pytest.raises(ValueError, match="2 or more"):
        changed_pairs(neg, "T")


def test_inputs_are_not_modified_and_outputs_are_new_tensors():
    features, masks = make_batch([12, 9, 5, 7])
    kept = {m: (features[m].clone(), masks[m].clone()) for m in features}
    for strategy in "ABCD":
        neg = make_negatives(features, masks, strategy, torch.Generator().manual_seed(0))
        for m in features:
            assert torch.equal(features[m], kept[m][0]) and torch.equal(masks[m], kept[m][1])
            assert neg.features[m].data_ptr() != features[m].data_ptr()
            assert neg.masks[m].data_ptr() != masks[m].data_ptr()


def test_bad_input_is_refused_with_a_clear_message():
    features, masks = make_batch([5, 4])
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_negatives(features, masks, "E")
    with pytest.raises(ValueError, match="two or three modalities"):
        make_negatives({"T": features["T"]}, {"T": masks["T"]})
    with pytest.raises(ValueError, match="masks name"):
        make_negatives(features, {"T": masks["T"], "A": masks["A"]})
    with pytest.raises(ValueError, match=r"masks\['A'\] must be bool"):
        make_negatives(features, {**masks, "A": masks["A"].float()})
    with pytest.raises(ValueError, match=r"features\['A'\] must be float"):
        make_negatives({**features, "A": features["A"].long()}, masks)
    with pytest.raises(ValueError, match="steps_per_second needs an entry for 'A'"):
        make_negatives(features, masks, "B", steps_per_second={"V": 8.0})
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        make_negatives(features, masks, "C", noise_std=0.0)
    with pytest.raises(TypeError, match="torch.Generator"):
        make_negatives(features, masks, "C", generator=0)


def test_on_a_synthetic_corpus_batch():
    splits = SyntheticCorpus(DataConfig(n_samples=80), seed=0).feature_splits()
    batch = next(iter(make_loader(splits["train"], 48, shuffle=False)))
    neg = make_negatives(batch["features"], batch["masks"], "D", torch.Generator().manual_seed(0))
    assert not neg.unchanged.any()  # 8 or more words per sample: every strategy bites
    pairs = changed_pairs(neg, "TAV")
    is_b = torch.tensor([s == "B" for s in neg.strategy])
    for pair in pairs.values():
        assert pair[is_b].all()
    assert sum(int(p.sum()) for p in pairs.values()) >= 48


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu_with_a_cpu_generator():
    features, masks = make_batch([12, 9, 5, 7, 12, 3, 10, 8] * 4)
    ids = torch.randint(2, 50, (32, 12), generator=torch.Generator().manual_seed(0))
    features["T"] = ids * masks["T"]
    cpu = make_negatives(features, masks, "D", torch.Generator().manual_seed(0), vocab_size=50)
    gpu = make_negatives(
        {m: x.cuda() for m, x in features.items()},
        {m: k.cuda() for m, k in masks.items()},
        "D",
        torch.Generator().manual_seed(0),
        vocab_size=50,
    )
    assert gpu.strategy == cpu.strategy and gpu.modality == cpu.modality
    for m in "TAV":
        assert gpu.features[m].is_cuda
        torch.testing.assert_close(gpu.features[m].cpu(), cpu.features[m])
        assert torch.equal(gpu.masks[m].cpu(), cpu.masks[m])
    for pair, broken in changed_pairs(gpu, "TAV").items():
        assert torch.equal(broken.cpu(), changed_pairs(cpu, "TAV")[pair])
    on_device = make_negatives(
        {m: x.cuda() for m, x in features.items()},
        {m: k.cuda() for m, k in masks.items()},
        "D",
        torch.Generator(device="cuda").manual_seed(0),
        vocab_size=50,
    )
    assert on_device.features["A"].is_cuda and not on_device.unchanged.any()

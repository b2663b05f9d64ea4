"""Negative samples for contrastive pre-training, made without labels (CorMulT 3.2.2, 4.2).

Few datasets say how well the modalities of a clip agree, so CorMulT pre-trains its Modality
Correlation Evaluator contrastively: a real clip is a *positive* (its modalities belong
together) and a copy with one correlation deliberately broken is a *negative*. Section 4.2
compares four ways of breaking it:

``A`` cross-sample mixing: one randomly chosen modality comes from another sample of the batch;
``B`` temporal shift: audio and video about one second out of sync, the text one word off;
``C`` perturbation: Gaussian noise on audio or video, random word replacement in the text;
``D`` per sample one of A, B and C at random (the best strategy in the paper's Table 2).

Everything works on padded batches as :func:`~cormult_lib.data.dataset.collate_multimodal`
makes them: ``features`` {modality: ``(batch, time, dim)`` float, or ``(batch, time)`` int64
token ids for ``"T"``} and ``masks`` {modality: bool ``(batch, time)``, ``True`` on real
steps}, for two or three of the modalities ``"T"``, ``"A"``, ``"V"``. Masks may pad at the end
(MMSA) or at the start (MulT); only the positions where the mask is ``True`` are ever changed,
so padding stays exactly as it came in. Inputs are never modified in place. All randomness
comes from the ``torch.Generator`` passed in, so a seed fixes the negatives.

A strategy cannot always change a sample (a one-step sequence cannot be shifted, two samples
of a batch may hold identical features). Nothing is pretended: :class:`NegativeBatch` records
per modality whether the output differs from the input (``changed``), flags samples where
nothing changed (``unchanged``) and :func:`changed_pairs` says which modality pairs a negative
actually breaks, which is what the triplet loss and the ROC-AUC evaluation should use.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from cormult_lib.correlation.distances import PAIRS
from cormult_lib.modalities import MODALITIES, parse_modalities

STRATEGIES = ("A", "B", "C", "D")
# CMU-MOSEI's word-aligned features and the synthetic corpus hold one step per word; people say
# about 2.9 words per second, so one second of audio or video is about three steps.
WORD_ALIGNED_STEPS_PER_SECOND = 3.0


@dataclass
class NegativeBatch:
    """Negatives made from one batch, and what was done to each sample.

    Attributes:
        features: modality -> new tensor, same shape and dtype as the input.
        masks: modality -> new bool ``(batch, time)``; differs from the input only where
            strategy A brought in another sample's modality (with its own mask).
        strategy: per sample ``"A"``, ``"B"`` or ``"C"`` (strategy D resolved).
        modality: per sample the letters the strategy acted on, canonical order: A the replaced
            modality (``"T"``, ``"A"`` or ``"V"``), B the rolled ones (``"TA"`` for T+A+V and
            T+A, ``"TV"`` for T+V, ``"A"`` for A+V; the remaining one is the fixed reference),
            C the perturbed modality.
        source: ``(batch,)`` int64, for A the index of the sample mixed in, else -1.
        shift: modality -> ``(batch,)`` int64 steps each sample's valid steps were rolled by
            (B only, else 0); positive delays the stream, as ``torch.roll``.
        changed: modality -> ``(batch,)`` bool, whether the output's features or mask differ
            from the input's for that sample.
        unchanged: ``(batch,)`` bool, ``True`` where the strategy could not change anything
            (no modality differs); such a sample is no negative and should be left out.
    """

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    strategy: list[str]
    modality: list[str]
    source: torch.Tensor
    shift: dict[str, torch.Tensor]
    changed: dict[str, torch.Tensor]
    unchanged: torch.Tensor

    @property
    def n_unchanged(self) -> int:
        """How many samples the strategy could not change."""
        return int(self.unchanged.sum())

    def summary(self) -> pd.DataFrame:
        """Per strategy: samples, samples left unchanged, and samples changed per modality."""
        frame = pd.DataFrame(
            {
                "strategy": self.strategy,
                "n": 1,
                "unchanged": self.unchanged.cpu().numpy(),
                **{f"changed_{m}": c.cpu().numpy() for m, c in self.changed.items()},
            }
        )
        return frame.groupby("strategy").sum()


#: Keyword arguments of :func:`make_negatives` that set how strong a negative is.
NEGATIVE_OPTIONS = ("shift_seconds", "noise_std", "replace_prob")


def batch_size_without_a_lone_sample(n: int, batch_size: int) -> int:
    """The smallest batch size from ``batch_size`` on whose batches of ``n`` samples all hold
    two or more, as strategies A and D need (``n % size != 1``): 21 samples in batches of 4
    would leave one over, and of 5 too, so 6. ``batch_size`` itself when no size helps
    (``n < 2``)."""
    size = batch_size
    while n % size == 1 and size < n:
        size += 1
    return size


def check_negative_options(options: Mapping[str, float] | None) -> dict[str, float]:
    """Every one of :data:`NEGATIVE_OPTIONS`: its value in ``options``, else
    :func:`make_negatives`'s default (so that two runs with the same negatives record the same
    options, however they were spelled). Unknown keys are refused."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(NEGATIVE_OPTIONS))
    if unknown:
        raise ValueError(f"negative_options: unknown {unknown}; expected any of {NEGATIVE_OPTIONS}")
    defaults = inspect.signature(make_negatives).parameters
    return {k: float(options.get(k, defaults[k].default)) for k in NEGATIVE_OPTIONS}


def make_negatives(
    features: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    strategy: str = "D",
    generator: torch.Generator | None = None,
    *,
    steps_per_second: Mapping[str, float] | None = None,
    shift_seconds: float = 1.0,
    noise_std: float = 0.1,
    replace_prob: float = 0.15,
    vocab_size: int | None = None,
) -> NegativeBatch:
    """One negative per sample of a padded batch, without labels.

    Strategy A: per sample one of the present modalities, chosen uniformly, is replaced by the
    same modality (features and mask) of another sample chosen uniformly from the rest of the
    batch (never the sample itself, so a batch of one is refused for A and D).

    Strategy B: circular rolls over each sample's valid steps (the positions where its mask is
    ``True``), so every frame is kept, masks and lengths stay valid and start-padded masks work
    too. Audio (video when there is no audio) is delayed by
    ``k = max(1, round(shift_seconds * steps_per_second[m]))`` steps; video stays put as the
    reference; text is advanced by one step (one word, or one token for token ids). Audio and
    video therefore end up ``k`` steps apart and text ``k + 1`` and 1 steps from them. Text goes
    the other way from audio so that the two never move together; where a circular roll would
    still put text and the rolled stream at the same relative position (a sequence of ``k + 1``
    steps), text is delayed by one step instead; two-step streams can only roll by one, so there
    text and audio do move together (``changed_pairs`` reports that pair unbroken). A stream
    shorter than ``k + 1`` steps is rolled by its length minus one; one with fewer than 2 valid
    steps cannot be shifted and is left as is (see ``changed`` / ``unchanged``).

    Strategy C: one of the present modalities, chosen uniformly per sample, is perturbed.
    Audio and video get Gaussian noise on their valid steps of standard deviation
    ``noise_std`` times the per-feature standard deviation over that sample's valid steps
    (population std; a feature constant within the sample uses its std over the whole batch's
    valid steps instead). Text gets random word replacement: ``max(1, round(replace_prob *
    length))`` distinct valid positions are replaced, float word vectors by the vector at
    another valid position of the batch (any sample), token ids by a different random id in
    ``[2, vocab_size)`` (0 is ``<pad>``, 1 ``<unk>``). The paper also mentions replacing
    characters; that is impossible on token ids or word vectors, so it is not offered.

    Strategy D: per sample one of A, B and C, uniformly.

    Args:
        features: modality -> ``(batch, time, dim)`` float, or ``(batch, time)`` integer token
            ids for ``"T"``; two or three of ``"T"``, ``"A"``, ``"V"``.
        masks: modality -> bool ``(batch, time)``, ``True`` on real steps.
        strategy: one of :data:`STRATEGIES`.
        generator: source of all randomness (``None``: torch's global generator); random
            numbers are drawn on its device.
        steps_per_second: modality -> steps per second, used for the stream B delays (audio,
            else video). Default :data:`WORD_ALIGNED_STEPS_PER_SECOND` (3.0, so 1 s = 3 steps)
            for word-aligned data (CMU-MOSEI aligned features, the synthetic corpus). For raw-
            clip caches audio has ``sample_rate / hop_length`` frames per second (100 with the
            defaults); video has ``num_frames`` spread over the clip, which has no fixed rate.
            A ``"T"`` entry is not used: text always moves by one step.
        shift_seconds: B's audio/video offset in seconds (> 0).
        noise_std: C's noise relative to each feature's std (> 0).
        replace_prob: C's share of text positions replaced, in (0, 1].
        vocab_size: vocabulary size, required (>= 4) when text is token ids and strategy is C
            or D.

    Returns:
        A :class:`NegativeBatch`.
    """
    mods, batch, device = _check_batch(features, masks)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator)}")
    if strategy in ("A", "D") and batch < 2:
        raise ValueError(
            f"strategy {strategy} needs a batch of at least 2 samples: cross-sample mixing "
            "takes a modality from another sample of the batch, and this batch has 1"
        )
    for name, value, ok, expected in (
        ("shift_seconds", shift_seconds, shift_seconds > 0, "> 0"),
        ("noise_std", noise_std, noise_std > 0, "> 0"),
        ("replace_prob", replace_prob, 0 < replace_prob <= 1, "in (0, 1]"),
    ):
        if not ok:
            raise ValueError(f"{name} must be {expected}, got {value}")
    uses = {"A", "B", "C"} if strategy == "D" else {strategy}
    text_ids = "T" in mods and not features["T"].is_floating_point()
    if "C" in uses and text_ids:
        _check_vocab(features["T"], masks["T"], vocab_size)
    moved = "A" if "A" in mods else "V"
    k = _shift_steps(moved, shift_seconds, steps_per_second) if "B" in uses else 0

    draw = _Draws(generator, device)
    letters = ["A", "B", "C"]
    if strategy == "D":
        chosen = [letters[i] for i in draw.integers(3, batch).tolist()]
    else:
        chosen = [strategy] * batch
    rows = {s: torch.tensor([c == s for c in chosen], device=device) for s in letters}

    out_f = {m: features[m].clone() for m in mods}
    out_m = {m: masks[m].clone() for m in mods}
    modality = [""] * batch
    source = torch.full((batch,), -1, dtype=torch.long, device=device)
    shift = {m: torch.zeros(batch, dtype=torch.long, device=device) for m in mods}

    if "A" in uses:
        which = draw.integers(len(mods), batch)
        other = (torch.arange(batch, device=device) + draw.integers(batch - 1, batch) + 1) % batch
        source = torch.where(rows["A"], other, source)
        for j, m in enumerate(mods):
            take = rows["A"] & (which == j)
            out_f[m] = torch.where(_expand(take, out_f[m]), features[m][other], out_f[m])
            out_m[m] = torch.where(take[:, None], masks[m][other], out_m[m])
        _record(modality, rows["A"], [mods[j] for j in which.tolist()])

    if "B" in uses:
        rolls = _plan_shifts(mods, masks, moved, k)
        rolled = "".join(m for m in mods if m in rolls)
        for m, roll in rolls.items():
            shift[m] = torch.where(rows["B"], roll, shift[m])
            out_f[m] = roll_valid(out_f[m], masks[m], shift[m])
        _record(modality, rows["B"], [rolled] * batch)

    if "C" in uses:
        which = draw.integers(len(mods), batch)
        for j, m in enumerate(mods):
            take = rows["C"] & (which == j)
            if m != "T":
                out_f[m] = _add_noise(out_f[m], masks[m], take, noise_std, draw)
            elif text_ids:
                out_f[m] = _replace_ids(out_f[m], masks[m], take, replace_prob, vocab_size, draw)
            else:
                out_f[m] = _replace_vectors(out_f[m], masks[m], take, replace_prob, draw)
        _record(modality, rows["C"], [mods[j] for j in which.tolist()])

    changed = {
        m: _rows_differ(out_f[m], features[m]) | _rows_differ(out_m[m], masks[m]) for m in mods
    }
    unchanged = ~torch.stack(list(changed.values())).any(0)
    return NegativeBatch(out_f, out_m, chosen, modality, source, shift, changed, unchanged)


def changed_pairs(
    negatives: NegativeBatch, modalities: str | Sequence[str]
) -> dict[tuple[str, str], torch.Tensor]:
    """Which modality pairs each negative breaks.

    For every pair of :data:`PAIRS` (canonical order ``("T", "A")``, ``("T", "V")``,
    ``("A", "V")``) whose two modalities are both in ``modalities``, a ``(batch,)`` bool: under
    A and C the pair is broken when at least one of its modalities changed; under B when at
    least one changed *and* the two are no longer in sync, i.e. their circular offsets differ
    as fractions of their lengths (``shift_X mod L_X / L_X != shift_Y mod L_Y / L_Y``; for
    word-aligned data, where ``L_X == L_Y``, simply different offsets).

    Args:
        negatives: the output of :func:`make_negatives`.
        modalities: two or three letters, e.g. ``"TAV"`` or ``("A", "V")``.

    Returns:
        ``{(X, Y): (batch,) bool}``.
    """
    mods = parse_modalities(modalities, min_count=2)
    missing = [m for m in mods if m not in negatives.features]
    if missing:
        raise ValueError(
            f"changed_pairs: modalities {missing} requested but the negatives hold only "
            f"{''.join(negatives.features)}"
        )
    device = negatives.unchanged.device
    is_b = torch.tensor([s == "B" for s in negatives.strategy], device=device, dtype=torch.bool)
    lengths = {m: negatives.masks[m].sum(1) for m in mods}
    offsets = {m: negatives.shift[m] % lengths[m].clamp(min=1) for m in mods}
    result = {}
    for x, y in PAIRS:
        if x in mods and y in mods:
            either = negatives.changed[x] | negatives.changed[y]
            out_of_sync = offsets[x] * lengths[y] != offsets[y] * lengths[x]
            result[(x, y)] = either & (~is_b | out_of_sync)
    return result


def roll_valid(x: torch.Tensor, mask: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll each sample's valid steps circularly, leaving padding where it is.

    The ``q``-th valid step of sample ``b`` receives the valid step of rank
    ``(q - shifts[b]) mod length_b``, the same as ``torch.roll`` applied to the valid steps
    alone, whether padding sits at the end, the start or anywhere.

    Args:
        x: ``(batch, time)`` or ``(batch, time, dim)``.
        mask: bool ``(batch, time)``, ``True`` on valid steps.
        shifts: ``(batch,)`` integer steps; positive moves content to later steps.

    Returns:
        A new tensor shaped like ``x``.
    """
    batch, time = mask.shape
    steps = torch.arange(time, device=mask.device).expand(batch, time)
    # Positions of the valid steps in time order, then the padding.
    order = torch.argsort(torch.where(mask, steps, steps + time), dim=1)
    lengths = mask.sum(1, keepdim=True).clamp(min=1)
    rank = mask.long().cumsum(1) - 1
    src = torch.gather(order, 1, (rank - shifts.to(mask.device)[:, None]) % lengths)
    src = torch.where(mask, src, steps)
    return torch.gather(x, 1, src.view(batch, time, *[1] * (x.dim() - 2)).expand_as(x))


class _Draws:
    """Random numbers from one generator, drawn on its device and moved to the data's."""

    def __init__(self, generator: torch.Generator | None, device: torch.device):
        self.generator = generator
        self.device = device
        self.draw_device = generator.device if generator is not None else torch.device("cpu")

    def uniform(self, *shape: int) -> torch.Tensor:
        out = torch.rand(shape, generator=self.generator, device=self.draw_device)
        return out.to(self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        out = torch.randn(shape, generator=self.generator, device=self.draw_device)
        return out.to(self.device)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        out = torch.randint(high, shape, generator=self.generator, device=self.draw_device)
        return out.to(self.device)


def _check_batch(
    features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> tuple[tuple[str, ...], int, torch.device]:
    if set(features) != set(masks):
        raise ValueError(
            f"features name modalities {sorted(features)} but masks name {sorted(masks)}"
        )
    unknown = sorted(set(features) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}, expected letters out of 'TAV'")
    if len(features) < 2:
        raise ValueError(
            f"negatives need two or three modalities (a correlation to break), got "
            f"{sorted(features)}"
        )
    mods = parse_modalities(list(features), min_count=2)
    batch = features[mods[0]].shape[0]
    device = features[mods[0]].device
    for m in mods:
        x, mask = features[m], masks[m]
        ids_ok = m == "T" and x.dim() == 2 and not x.is_floating_point()
        if not (ids_ok or (x.dim() == 3 and x.is_floating_point())):
            raise ValueError(
                f"features[{m!r}] must be float (batch, time, dim)"
                + (" or integer token ids (batch, time)" if m == "T" else "")
                + f", got {x.dtype} of shape {tuple(x.shape)}"
            )
        if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise ValueError(
                f"masks[{m!r}] must be bool {tuple(x.shape[:2])} like its features, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if x.shape[0] != batch or x.device != device or mask.device != device:
            raise ValueError(
                f"every modality must have the same batch size and device; {m!r} has "
                f"{x.shape[0]} samples on {x.device}, {mods[0]!r} {batch} on {device}"
            )
    if batch < 1:
        raise ValueError("make_negatives got an empty batch")
    return mods, batch, device


def _check_vocab(ids: torch.Tensor, mask: torch.Tensor, vocab_size: int | None) -> None:
    if vocab_size is None or vocab_size < 4:
        raise ValueError(
            "text is token ids, so strategy C's word replacement needs vocab_size (>= 4: ids 0 "
            f"<pad> and 1 <unk> plus at least two words to swap), got {vocab_size!r}"
        )
    valid = ids[mask]
    if valid.numel() and (valid.min() < 0 or valid.max() >= vocab_size):
        raise ValueError(
            f"text token ids must lie in [0, vocab_size={vocab_size}), found "
            f"[{int(valid.min())}, {int(valid.max())}]"
        )


def _shift_steps(
    moved: str, shift_seconds: float, steps_per_second: Mapping[str, float] | None
) -> int:
    """``max(1, round(shift_seconds * rate))`` for the stream that strategy B delays."""
    rates = {"A": WORD_ALIGNED_STEPS_PER_SECOND, "V": WORD_ALIGNED_STEPS_PER_SECOND}
    if steps_per_second is not None:
        unknown = sorted(set(steps_per_second) - set(MODALITIES))
        if unknown:
            raise ValueError(f"steps_per_second has unknown modalities {unknown}")
        if moved not in steps_per_second:
            raise ValueError(
                f"steps_per_second needs an entry for {moved!r}, the stream strategy B delays; "
                f"got {dict(steps_per_second)}"
            )
        rates = dict(steps_per_second)
    if not rates[moved] > 0:
        raise ValueError(f"steps_per_second[{moved!r}] must be > 0, got {rates[moved]}")
    return max(1, round(shift_seconds * rates[moved]))


def _plan_shifts(
    mods: tuple[str, ...], masks: Mapping[str, torch.Tensor], moved: str, k: int
) -> dict[str, torch.Tensor]:
    """Strategy B's signed roll per rolled modality, ``(batch,)`` int64 (see make_negatives)."""
    length = masks[moved].sum(1)
    rolls = {moved: torch.minimum(torch.full_like(length, k), length - 1).clamp(min=0)}
    if "T" in mods:
        text_length = masks["T"].sum(1)
        advance = torch.where(text_length >= 2, -1, 0)
        # Same circular position as the delayed stream: delay the text by one word instead.
        same = (advance % text_length.clamp(min=1)) * length == rolls[moved] * text_length
        rolls["T"] = torch.where(same, -advance, advance)
    return rolls


def _add_noise(
    x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, noise_std: float, draw: _Draws
) -> torch.Tensor:
    """Gaussian noise of ``noise_std`` x each feature's std on the valid steps of ``rows``."""
    weight = mask.unsqueeze(-1).float()
    xf = x.float()
    count = weight.sum(1).clamp(min=1)  # (batch, 1)
    mean = (xf * weight).sum(1) / count
    std = ((((xf - mean[:, None]) * weight) ** 2).sum(1) / count).sqrt()  # (batch, dim)
    total = weight.sum((0, 1)).clamp(min=1)
    batch_mean = (xf * weight).sum((0, 1)) / total
    batch_std = ((((xf - batch_mean) * weight) ** 2).sum((0, 1)) / total).sqrt()  # (dim,)
    scale = noise_std * torch.where(std > 0, std, batch_std.expand_as(std))
    noisy = (xf + draw.normal(*x.shape) * scale[:, None, :]).to(x.dtype)
    return torch.where((mask & rows[:, None]).unsqueeze(-1), noisy, x)


def _pick_positions(
    mask: torch.Tensor, rows: torch.Tensor, replace_prob: float, draw: _Draws
) -> torch.Tensor:
    """Bool ``(batch, time)``: ``max(1, round(p * length))`` distinct valid steps per row."""
    length = mask.sum(1)
    count = torch.minimum(torch.round(replace_prob * length).clamp(min=1), length)
    scores = torch.where(mask, draw.uniform(*mask.shape), 2.0)
    rank = scores.argsort(1).argsort(1)
    return mask & rows[:, None] & (rank < count[:, None])


def _replace_vectors(
    x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, replace_prob: float, draw: _Draws
) -> torch.Tensor:
    """Replace picked word vectors by those at other valid positions of the batch."""
    target = _pick_positions(mask, rows, replace_prob, draw)
    flat = mask.flatten()
    pool = flat.nonzero().squeeze(1)  # flat positions of every valid word of the batch
    batch, time = mask.shape
    others = pool.numel() - 1
    pick = torch.floor(draw.uniform(batch, time) * others).long().clamp(0, max(others - 1, 0))
    if others < 1:  # a single word in the whole batch: nothing to swap it with
        return x.clone()
    own = (flat.long().cumsum(0) - 1).view(batch, time)
    pick = pick + (pick >= own).long()  # skip the word itself
    replacement = x.reshape(batch * time, -1)[pool[pick]].view_as(x)
    return torch.where(target.unsqueeze(-1), replacement, x)


def _replace_ids(
    ids: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor,
    replace_prob: float,
    vocab_size: int,
    draw: _Draws,
) -> torch.Tensor:
    """Replace picked token ids by different random ids in ``[2, vocab_size)``."""
    target = _pick_positions(mask, rows, replace_prob, draw)
    ordinary = ids >= 2  # its own id is excluded from the draw
    width = torch.where(ordinary, vocab_size - 3, vocab_size - 2)
    new = 2 + torch.minimum(torch.floor(draw.uniform(*ids.shape) * width).long(), width - 1)
    new = new + (ordinary & (new >= ids)).long()
    return torch.where(target, new.to(ids.dtype), ids)


def _expand(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` bool viewed so that it broadcasts against ``like``."""
    return rows.view(-1, *[1] * (like.dim() - 1))


def _rows_differ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a != b).reshape(a.shape[0], -1).any(1)


def _record(modality: list[str], rows: torch.Tensor, letters: list[str]) -> None:
    for i in rows.nonzero().squeeze(1).tolist():
        modality[i] = letters[i]

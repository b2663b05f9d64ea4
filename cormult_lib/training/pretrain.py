"""Pre-training the Modality Correlation Evaluator (CorMulT section 3.2.4) with :func:`fit`.

Pre-training is *unsupervised*: it needs no sentiment label and reads none. Each training
batch of real clips (positives) gets one negative per sample from
:func:`~cormult_lib.correlation.negatives.make_negatives` (strategy A, B, C or D); the evaluator
embeds both, and the triplet loss of Eq. 8
(:func:`~cormult_lib.correlation.losses.correlation_triplet_loss`) pulls the modalities of a
real clip together in the shared space and pushes the broken modality of the negative away.
Only the triplets of pairs that a negative actually broke count
(:func:`~cormult_lib.correlation.negatives.changed_pairs`). The loss function below touches
``batch["features"]`` and ``batch["masks"]`` only; the labels in the batch are never read.

After training, the distance is fitted on embeddings of training samples: the Mahalanobis
covariance, and for the ``exp(-d / scale)`` coefficients the scale (see
:mod:`~cormult_lib.correlation.distances`). When the loss itself uses the Mahalanobis distance,
its covariance is refitted from the current weights before every epoch (a deterministic function
of the weights, so a resumed run stays exact).

:func:`save_evaluator` / :func:`load_evaluator` keep everything a later chapter needs to
rebuild the evaluator and its fitted distance in one file.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
import pandas as pd
import torch
from torch import nn

from cormult_lib.config import CorrelationConfig
from cormult_lib.correlation.distances import Distance
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator, build_evaluator
from cormult_lib.correlation.losses import ANCHORS, correlation_triplet_loss
from cormult_lib.correlation.negatives import (
    STRATEGIES,
    NegativeBatch,
    batch_size_without_a_lone_sample,
    changed_pairs,
    check_negative_options,
    make_negatives,
)
from cormult_lib.data.dataset import MultimodalSplit, make_loader
from cormult_lib.device import move_to_device
from cormult_lib.files import read_torch_state
from cormult_lib.modalities import parse_modalities
from cormult_lib.models.cormult import CorMulT
from cormult_lib.models.mult import MulT
from cormult_lib.seeding import seed_everything
from cormult_lib.training.checkpoints import save_atomic
from cormult_lib.training.loop import FitResult, RunOptions, check_run_options, fit

#: Training samples embedded to fit the distance (Mahalanobis covariance, coefficient scale).
FIT_SAMPLES = 1024
#: 2: stacked layers (one member per modality); 1: one module per modality, before.
EVALUATOR_FORMAT = 2


class OutdatedEvaluatorError(ValueError):
    """An evaluator file written by an older version of :func:`save_evaluator`."""


@dataclass
class PretrainResult(FitResult):
    """A pre-trained evaluator and what it takes to use it: :func:`fit`'s result (``model``
    with the weights of its best validation epoch, in eval mode; ``history``, where
    ``train_LOSS_T``, ... are the per-modality parts of Eq. 8; ``best_epoch``;
    ``stopped_early``) and

    Attributes:
        distance: the distance fitted on training embeddings; ``model.coefficients(features,
            masks, distance)`` gives the coefficients ``Cor``.
        settings: how the evaluator was built and trained: ``config`` (the
            :class:`~cormult_lib.config.CorrelationConfig` as a dict), ``modalities``,
            ``input_dims``, ``vocab_size``, ``max_len``, ``strategy``, the
            :data:`PRETRAIN_OPTIONS` (``distance`` the one used; ``negative_options`` all of
            them, defaults included), ``seed``, ``threads``, ``train_fingerprint``,
            ``valid_fingerprint``, ``best_epoch``, ``stopped_early`` (what a saved evaluator
            records).
    """

    model: ModalityCorrelationEvaluator
    distance: Distance
    settings: dict


def split_fingerprint(split: MultimodalSplit) -> str:
    """A short hash of a split's sample ids and feature sizes, to recognise the same data."""
    digest = hashlib.sha1("\n".join(map(str, split.ids)).encode())
    digest.update(repr(sorted(split.dims().items())).encode())
    return digest.hexdigest()[:16]


def text_vocab_size(*splits: MultimodalSplit) -> int | None:
    """``max id + 1`` over the splits when text is token ids (int ``(n, time)``), else ``None``."""
    text = [s.features["T"] for s in splits if "T" in s.features]
    if not text or text[0].ndim != 2:
        return None
    if not all(np.issubdtype(t.dtype, np.integer) for t in text):
        raise ValueError(f"text token ids must be integers, got {[str(t.dtype) for t in text]}")
    return max(int(t.max()) for t in text if t.size) + 1


def _check_splits(train: MultimodalSplit, valid: MultimodalSplit, modalities: tuple[str, ...]):
    for split, role in ((train, "train_split"), (valid, "valid_split")):
        missing = [m for m in modalities if m not in split.features]
        if missing:
            raise ValueError(
                f"{role} ({split.name}) lacks modalities {missing}; it holds "
                f"{''.join(split.modalities)}"
            )
    for m in modalities:
        if train.dims()[m] != valid.dims()[m]:
            raise ValueError(
                f"modality {m} has {train.dims()[m]} features in train_split but "
                f"{valid.dims()[m]} in valid_split"
            )


@torch.no_grad()
def embed_split(
    model: ModalityCorrelationEvaluator,
    split: MultimodalSplit,
    batch_size: int = 64,
    max_samples: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Shared-space embeddings of a split, modality -> ``(n, t, o)`` on the model's device.

    ``max_samples`` keeps a fixed random subset (drawn from ``seed``) of larger splits. The
    model is put in eval mode (no dropout) and left there.
    """
    if max_samples is not None and len(split) > max_samples:
        rng = np.random.default_rng(seed)
        split = split.select(np.sort(rng.choice(len(split), max_samples, replace=False)))
    split = split.with_modalities(model.modalities)
    device = next(model.parameters()).device
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for batch in make_loader(split, batch_size, shuffle=False, device=device):
        batch = move_to_device(batch, device)
        for m, emb in model(batch["features"], batch["masks"]).items():
            parts[m].append(emb.float())
    return {m: torch.cat(chunks) for m, chunks in parts.items()}


def embed_together(
    model: nn.Module,
    features: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    negatives: NegativeBatch,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The evaluator's embeddings of a batch and of its negatives, in one forward pass.

    The evaluator treats every sample on its own (attention and pooling stay within a sample,
    no batch statistics), so embedding the ``2 * batch`` samples together gives what two
    passes would, at half the number of kernel calls. Negatives have the batch's shapes.

    Returns:
        ``(positive, negative)``: modality -> ``(batch, t, o)`` each.
    """
    batch = next(iter(features.values())).shape[0]
    both = model(
        {m: torch.cat([x, negatives.features[m]]) for m, x in features.items()},
        {m: torch.cat([x, negatives.masks[m]]) for m, x in masks.items()},
    )
    return {m: e[:batch] for m, e in both.items()}, {m: e[batch:] for m, e in both.items()}


class PretrainOptions(TypedDict, total=False):
    """The :data:`PRETRAIN_OPTIONS` as keyword arguments (see :func:`pretrain_evaluator`)."""

    distance: str | None
    steps_per_second: Mapping[str, float] | None
    negative_options: Mapping[str, float] | None
    anchor: str
    cross_attention: bool
    patience: int | None
    grad_clip: float | None


#: Keyword arguments of :func:`pretrain_evaluator` that shape the evaluator besides ``config``,
#: ``strategy``, ``modalities`` and ``seed``: :func:`load_or_pretrain` passes them on.
PRETRAIN_OPTIONS = tuple(PretrainOptions.__annotations__)


def _recipe(
    train: MultimodalSplit,
    valid: MultimodalSplit,
    config: CorrelationConfig,
    mods: Sequence[str],
    strategy: str,
    seed: int,
    options: Mapping,
) -> dict:
    """Everything that shaped a pre-trained evaluator, as :func:`pretrain_evaluator` records it
    and :func:`load_or_pretrain` compares it: ``options`` holds every one of
    :data:`PRETRAIN_OPTIONS`; the number of CPU threads changes the order of floating-point sums,
    hence the weights."""
    steps_per_second = options["steps_per_second"]
    return {
        "config": asdict(config),
        "modalities": "".join(mods),
        "strategy": strategy,
        "distance": config.distance if options["distance"] is None else options["distance"],
        "steps_per_second": None if steps_per_second is None else dict(steps_per_second),
        "negative_options": check_negative_options(options["negative_options"]),
        "anchor": options["anchor"],
        "cross_attention": options["cross_attention"],
        "patience": options["patience"],
        "grad_clip": options["grad_clip"],
        "seed": seed,
        "threads": torch.get_num_threads(),
        "train_fingerprint": split_fingerprint(train),
        "valid_fingerprint": split_fingerprint(valid),
    }


def pretrain_evaluator(
    train_split: MultimodalSplit,
    valid_split: MultimodalSplit,
    config: CorrelationConfig,
    *,
    strategy: str = "D",
    modalities: str = "TAV",
    distance: str | None = None,
    steps_per_second: Mapping[str, float] | None = None,
    negative_options: Mapping[str, float] | None = None,
    anchor: str = "real",
    cross_attention: bool = True,
    patience: int | None = None,
    grad_clip: float | None = 1.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    compile: bool = False,
    **run: Unpack[RunOptions],
) -> PretrainResult:
    """Pre-train a :class:`~cormult_lib.correlation.evaluator.ModalityCorrelationEvaluator`.

    Args:
        train_split, valid_split: feature splits; the validation split chooses the best epoch
            (and stops early with ``patience``). Labels are not used.
        config: sizes and optimisation (``hidden_dim`` ... ``shared_dim``, ``margin``,
            ``distance``, ``epochs``, ``batch_size``, ``lr``).
        strategy: negative sampling strategy, one of ``"A"``-``"D"``.
        modalities: two or three of ``"T"``, ``"A"``, ``"V"``.
        distance: a name from :data:`~cormult_lib.correlation.distances.DISTANCES`;
            ``None`` takes ``config.distance``.
        steps_per_second: per modality, for strategy B's one-second shift (see
            :func:`~cormult_lib.correlation.negatives.make_negatives`; ``None``: word-aligned).
        negative_options: strengths of the negatives, any of ``shift_seconds`` (B),
            ``noise_std`` and ``replace_prob`` (C); ``None`` keeps ``make_negatives``'s defaults.
        anchor: ``"real"`` (Eq. 8) or ``"own"``: which anchor the negative distance uses (see
            :mod:`~cormult_lib.correlation.losses`).
        cross_attention: the evaluator's cross-attention layer (``False``: authors' code).
        patience, grad_clip: early stopping and gradient clipping of :func:`fit`.
        device: where to train; CUDA gets mixed precision and pinned memory.
        seed: seeds initial weights, shuffling and negatives.
        compile: :func:`torch.compile` the evaluator for training (:func:`fit`'s ``compile``).
        run: :func:`fit`'s ``checkpoint_path``, ``resume`` and ``progress``
            (:class:`~cormult_lib.training.loop.RunOptions`).

    Returns:
        A :class:`PretrainResult`.
    """
    check_run_options(run, "pretrain_evaluator")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    mods = parse_modalities(modalities, min_count=2)
    _check_splits(train_split, valid_split, mods)
    train = train_split.with_modalities(mods)
    valid = valid_split.with_modalities(mods)
    # Strategies A and D take a sample's modality from another sample of its batch.
    fewest = 2 if strategy in ("A", "D") else 1
    if len(train) < 2 or len(valid) < fewest:
        raise ValueError(
            f"pre-training with strategy {strategy} needs at least 2 training samples "
            f"(train_split) and {fewest} validation sample(s) (valid_split), got {len(train)} "
            f"and {len(valid)}"
        )
    options = check_negative_options(negative_options)
    recipe = _recipe(train, valid, config, mods, strategy, seed, {
        "distance": distance, "steps_per_second": steps_per_second, "negative_options": options,
        "anchor": anchor, "cross_attention": cross_attention, "patience": patience,
        "grad_clip": grad_clip,
    })  # fmt: skip
    vocab_size = text_vocab_size(train, valid) if "T" in mods else None
    dims = train.dims()
    max_len = max(1024, *(split.features[m].shape[1] for split in (train, valid) for m in mods))
    torch_device = torch.device(device)

    architecture = {
        "config": asdict(config),
        "input_dims": {m: int(dims[m]) for m in mods},
        "vocab_size": vocab_size,
        "max_len": max_len,
        "cross_attention": cross_attention,
    }
    generator = seed_everything(seed)
    model = evaluator_from_settings(architecture)
    measure = Distance(recipe["distance"])

    def loss_fn(model: nn.Module, batch: dict, stream: torch.Generator):
        # Unsupervised: only features and masks are read, never batch["labels"].
        features, masks = batch["features"], batch["masks"]
        negatives = make_negatives(
            features,
            masks,
            strategy,
            stream,
            steps_per_second=steps_per_second,
            vocab_size=vocab_size,
            **options,
        )
        positive, negative = embed_together(model, features, masks, negatives)
        loss, parts = correlation_triplet_loss(
            positive,
            negative,
            measure,
            config.margin,
            pair_mask=changed_pairs(negatives, mods),
            anchor=anchor,
        )
        return loss, {k: float(v) for k, v in parts.items() if k.startswith("LOSS_")}

    def refit_covariance(model: nn.Module, epoch: int) -> None:
        measure.fit(embed_split(model, train, config.batch_size, FIT_SAMPLES, seed))

    result = fit(
        model,
        # Negatives of strategies A and D mix samples within a batch, so no batch may hold a
        # single sample: training drops a lone last sample (a different one every epoch, as
        # the loader shuffles); validation, which must see every sample, grows its batch.
        make_loader(
            train,
            config.batch_size,
            shuffle=True,
            generator=generator,
            device=device,
            drop_last=len(train) % config.batch_size == 1,
        ),
        make_loader(
            valid,
            batch_size_without_a_lone_sample(len(valid), config.batch_size),
            shuffle=False,
            device=device,
        ),
        loss_fn,
        epochs=config.epochs,
        lr=config.lr,
        grad_clip=grad_clip,
        patience=patience,
        device=torch_device,
        generator=generator,
        seed=seed,
        on_epoch_start=refit_covariance if measure.name == "mahalanobis" else None,
        compile=compile,
        # A resumed run must train the same evaluator with the same loss; it may ask for more
        # epochs. (fit records the optimisation, the seed and the data itself.)
        settings={
            **{k: v for k, v in recipe.items() if k not in ("threads", "seed")},
            "config": {k: v for k, v in recipe["config"].items() if k != "epochs"},
            "architecture": {k: v for k, v in architecture.items() if k != "config"},
        },
        **run,
    )
    final = Distance(measure.name)
    if final.name != "cosine":  # cosine needs nothing fitted
        final.fit(embed_split(result.model, train, config.batch_size, FIT_SAMPLES, seed))
    settings = {
        **architecture,
        **recipe,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
    }
    result.model.eval()
    return PretrainResult(
        result.model, result.history, result.best_epoch, result.stopped_early, final, settings
    )


def evaluator_from_settings(settings: Mapping) -> ModalityCorrelationEvaluator:
    """An untrained evaluator with the architecture recorded in ``settings`` (a
    :class:`PretrainResult`'s, or a saved evaluator's)."""
    known = {f.name for f in fields(CorrelationConfig)}
    config = CorrelationConfig(**{k: v for k, v in settings["config"].items() if k in known})
    return build_evaluator(
        settings["input_dims"],
        config,
        vocab_size=settings["vocab_size"],
        max_len=settings["max_len"],
        cross_attention=settings["cross_attention"],
    )


def save_evaluator(path: str | Path, result: PretrainResult) -> Path:
    """Write the evaluator, its fitted distance, settings and history to one file (atomically).

    Everything is stored as tensors and plain Python values, so :func:`load_evaluator` reads it
    with ``torch.load(weights_only=True)``.
    """
    distance = result.distance.state_dict()
    if distance["covariance"] is not None:
        distance["covariance"] = torch.from_numpy(np.asarray(distance["covariance"]))
    path = Path(path)
    save_atomic(
        {
            "format": EVALUATOR_FORMAT,
            "settings": result.settings,
            "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
            "distance": distance,
            "history": result.history.to_dict(orient="list"),
        },
        path,
    )
    return path


def load_evaluator(path: str | Path, device: str | torch.device = "cpu") -> PretrainResult:
    """The :class:`PretrainResult` saved by :func:`save_evaluator`, model in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no pre-trained evaluator at {path}; run pretrain_evaluator and save_evaluator first"
        )
    state = read_torch_state(path, "an evaluator written by save_evaluator")
    version = state.get("format")
    if isinstance(version, int) and version < EVALUATOR_FORMAT:
        raise OutdatedEvaluatorError(
            f"{path} holds an evaluator in format {version} (per-modality layers), written "
            f"before the stacked layers of format {EVALUATOR_FORMAT}: pre-train it again "
            "(chapter 04, or pretrain_evaluator and save_evaluator) or delete the file"
        )
    if state.get("format") != EVALUATOR_FORMAT:
        raise ValueError(f"{path} is not an evaluator written by save_evaluator")
    model = evaluator_from_settings(state["settings"])
    model.load_state_dict(state["state_dict"])
    model.to(device).eval()
    distance_state = dict(state["distance"])
    if distance_state["covariance"] is not None:
        distance_state["covariance"] = distance_state["covariance"].numpy()
    return PretrainResult(
        model=model,
        history=pd.DataFrame(state["history"]),
        best_epoch=int(state["settings"]["best_epoch"]),
        stopped_early=bool(state["settings"]["stopped_early"]),
        distance=Distance.from_state_dict(distance_state),
        settings=state["settings"],
    )


def load_cormult(
    path: str | Path,
    mult: MulT,
    fusion: str = "product",
    freeze_evaluator: bool = True,
    device: str | torch.device = "cpu",
) -> CorMulT:
    """CorMulT over ``mult`` with the evaluator and fitted distance that :func:`save_evaluator`
    wrote to ``path``; ``mult`` is moved to ``device``."""
    result = load_evaluator(path, device=device)
    return CorMulT(mult.to(device), result.model, result.distance, fusion, freeze_evaluator)


def load_or_pretrain(
    path: str | Path,
    train_split: MultimodalSplit,
    valid_split: MultimodalSplit,
    config: CorrelationConfig,
    *,
    strategy: str = "D",
    modalities: str = "TAV",
    save_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    **options: Unpack[PretrainOptions],
) -> tuple[PretrainResult, bool]:
    """The evaluator saved at ``path`` (or ``save_path``) when it fits, else a new one.

    An evaluator fits when everything that shaped it is the same: the training and validation
    samples (:func:`split_fingerprint`), ``modalities``, ``strategy``, every field of
    ``config``, ``seed``, each of :data:`PRETRAIN_OPTIONS` (``options``, passed on to
    :func:`pretrain_evaluator`; those not given take its defaults), the number of CPU threads
    (they change the order of floating-point sums, hence the weights) and the file format
    (:data:`EVALUATOR_FORMAT`, raised when the code that produces it changes). A file that does
    not fit is named with what differs. When neither file fits, :func:`pretrain_evaluator` runs
    and the result is saved at ``save_path`` (default ``path``), so the next call loads it;
    pass a ``save_path`` to keep another chapter's checkpoint at ``path`` untouched. One line
    says what was done.

    Returns:
        ``(result, loaded)``: ``loaded`` is ``True`` when a saved evaluator was used.
    """
    mods = parse_modalities(modalities, min_count=2)
    unknown = sorted(set(options) - set(PRETRAIN_OPTIONS))
    if unknown:
        raise TypeError(f"load_or_pretrain: unknown options {unknown}; expected any of "
                        f"{PRETRAIN_OPTIONS}")
    defaults = inspect.signature(pretrain_evaluator).parameters
    chosen = {k: options.get(k, defaults[k].default) for k in PRETRAIN_OPTIONS}
    wanted = _recipe(
        train_split.with_modalities(mods), valid_split.with_modalities(mods), config, mods,
        strategy, seed, chosen,
    )
    save_path = Path(path if save_path is None else save_path)
    for candidate in dict.fromkeys([Path(path), save_path]):
        if not candidate.is_file():
            continue
        try:
            saved = load_evaluator(candidate, device)
        except OutdatedEvaluatorError as err:
            print(f"not used: {err}")
            continue
        differs = _differences(saved.settings, wanted)
        if not differs:
            print(f"loaded the evaluator {candidate}: it was pre-trained with these settings")
            return saved, True
        print(f"not used: {candidate} was pre-trained with other settings ({'; '.join(differs)})")
    result = pretrain_evaluator(
        train_split,
        valid_split,
        config,
        strategy=strategy,
        modalities=modalities,
        device=device,
        seed=seed,
        progress=progress,
        **options,
    )
    save_evaluator(save_path, result)
    print(f"pre-trained an evaluator ({config.epochs} epochs), saved to {save_path}")
    return result, False


def _differences(saved: dict, wanted: dict) -> list[str]:
    """``"name: saved -> wanted"`` for every setting of ``wanted`` that ``saved`` does not
    share (``config`` field by field; the training data by its fingerprint)."""
    differs = []
    for key, value in wanted.items():
        old = saved.get(key)
        if key == "config":
            old = old or {}
            differs += [
                f"config.{f}: {old.get(f)!r} -> {v!r}" for f, v in value.items() if old.get(f) != v
            ]
        elif key in ("train_fingerprint", "valid_fingerprint") and old != value:
            differs.append(f"other {'training' if key[0] == 't' else 'validation'} samples")
        elif old != value:
            differs.append(f"{key}: {old!r} -> {value!r}")
    return differs

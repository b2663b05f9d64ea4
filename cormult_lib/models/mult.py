"""MulT, the Multimodal Transformer (Tsai et al., 2019), as CorMulT section 3.3 builds on it.

For the modalities present (two or three of T text, A audio, V vision):

1. **Projection** (section 3.3.1, ``F'_m = Conv1D(F_m)``): a bias-free
   ``Conv1d(d_in, d, kernel)`` per modality, zero-padded by ``(kernel - 1) // 2`` steps on both
   sides so that it keeps the length (``causal=True``: ``kernel - 1`` steps on the left only,
   so that no output step reads a later input step); it is skipped when ``d_in == d``. Text
   may be token ids ``(batch, time)``: then ``Embedding(vocab_size, d, padding_idx=0)``
   replaces the projection. Text inputs get the embedding dropout first, as in MulT.
2. **Crossmodal transformers**: one per ordered pair, ``h_{S->T}`` = queries from the target
   ``T``, keys / values from the source ``S``
   (:class:`~cormult_lib.nn.attention.TransformerEncoder`, ``num_layers`` layers).
3. **Weighting** (CorMulT section 3.3.2, optional): ``h'_{S->T} = h_{S->T} * w_{S->T}`` with a
   per-sample weight ``w`` ``(batch,)``; CorMulT passes correlation coefficients here.
4. **Memory**: per target, the concatenation of its crossmodal outputs (``2d`` with three
   modalities, ``d`` with two) goes through a self-attention transformer of
   ``max(num_layers, 3)`` layers: ``H'_T``, ``H'_A``, ``H'_V``.
5. **Pooling** of each ``H'_m`` to one vector: ``"last"``, the last *valid* step of each sample
   (MulT's choice; found from the mask, so start- and end-padding agree) or ``"mean"``, the
   mean over valid steps. Concatenated (``6d`` / ``2d``), a residual two-layer MLP
   (``x + proj2(Dropout(ReLU(proj1(x))))``) and a linear head give one score (regression) or
   ``num_classes`` logits.

**Direction keys.** Crossmodal outputs and their weights are keyed ``"S->T"``: source ``S``
flows into target ``T``. ``"T->A"`` is audio (queries, and the output's time axis) enriched
with text (keys / values); it feeds the audio memory ``H'_A`` together with ``"V->A"``. This
is how the fusion equations of CorMulT section 3.3.2 use ``h_{T->A}``
(``H'_A = Transformer(Concat(h'_{T->A}, h'_{V->A}))``) and MulT's ``CM_{T->A}`` notation. The
sentence under the crossmodal equations of section 3.3.1 reads the arrow the other way round
("M is enriched with N"), which the paper's own fusion equations contradict. Correlation
weights are symmetric (``Cor_{T,A}`` weights both ``"T->A"`` and ``"A->T"``), so the weighting
does not depend on it.

Padding: masks (``True`` on real steps) are used for zeroing padded inputs, attention
(``use_padding_mask``), positions and pooling, so the output of a sample does not depend on how
much padding it has, where it is, or what it holds; masks are assumed contiguous (one block of
real steps). ``use_padding_mask=False`` reproduces MulT's code: attention then sees every step
with positions counted from the first step; only the zeroing of padded inputs and pooling
still read the masks.

**Weights of the official MulT code** (``yaohungt/Multimodal-Transformer``, ``MULTModel``):
:func:`mult_from_official` builds a :class:`MulT` configured as that code is (causal attention
with its ``"shifted"`` rule, no padding mask, kernel-1 projections, fairseq's positional table)
and maps an official state dict onto it (the tables of :mod:`cormult_lib.models.official_mult`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.config import ModelConfig
from cormult_lib.modalities import MODALITIES, parse_modalities
from cormult_lib.models.official_mult import (
    OFFICIAL_FIXED,
    OFFICIAL_OPTIONS,
    check_official,
    official_layout,
    required,
)
from cormult_lib.nn.attention import TransformerEncoder
from cormult_lib.nn.checks import check_inputs
from cormult_lib.nn.functional import dropout
from cormult_lib.nn.pooling import last_valid, masked_mean
from cormult_lib.nn.stacked import stack_groups

HEADS = ("regression", "classification")
POOLINGS = ("last", "mean")
DEFAULT_KERNEL_SIZES = {"T": 1, "A": 3, "V": 3}


def direction(source: str, target: str) -> str:
    """The key ``"S->T"`` of the crossmodal output with queries from ``target``."""
    return f"{source}->{target}"


def directions(modalities: Sequence[str]) -> tuple[str, ...]:
    """Every ``"S->T"`` between ``modalities``, grouped by target in canonical order T, A, V.

    ``directions("TAV")`` is ``("A->T", "V->T", "T->A", "V->A", "T->V", "A->V")``.
    """
    order = parse_modalities(modalities)
    return tuple(direction(s, t) for t in order for s in order if s != t)


def check_head(head: str, num_classes: int) -> int:
    """The width of the output layer for ``head``: 1 (regression) or ``num_classes``."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "classification" and num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for classification, got {num_classes}")
    return 1 if head == "regression" else num_classes


def _kernel_sizes(
    kernel_sizes: Mapping[str, int] | Sequence[int] | None, modalities: tuple[str, ...]
) -> dict[str, int]:
    if kernel_sizes is None:
        sizes = DEFAULT_KERNEL_SIZES
    elif isinstance(kernel_sizes, Mapping):
        sizes = dict(kernel_sizes)
    elif len(kernel_sizes) == 3:
        sizes = dict(zip(MODALITIES, kernel_sizes, strict=True))
    else:
        raise ValueError(
            "kernel_sizes must map modalities to sizes or list three sizes (T, A, V), got "
            f"{kernel_sizes!r}"
        )
    for m in modalities:
        k = sizes.get(m)
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(
                f"kernel_sizes[{m!r}] must be an odd int >= 1 (the length is kept), got {k!r}"
            )
    return {m: sizes[m] for m in modalities}


class MulT(nn.Module):
    """The Multimodal Transformer; see the module docstring for the architecture.

    Args:
        input_dims: modality -> feature size ``d_in`` (``input_dims["T"]`` is ignored when
            ``vocab_size`` is given). May hold more modalities than ``modalities``.
        modalities: the two or three modalities to use, e.g. ``"TAV"`` or ``"TA"``;
            ``None``: those of ``input_dims``.
        hidden_dim: ``d`` (MulT on CMU-MOSEI: 40); ``num_heads`` must divide it.
        num_heads: attention heads (MulT: 8 for CMU-MOSEI, 10 for CMU-MOSI).
        num_layers: layers of each crossmodal transformer; the memory transformers have
            ``max(num_layers, 3)``.
        kernel_sizes: odd Conv1d kernel per modality, a mapping or ``(T, A, V)``; ``None``:
            ``{"T": 1, "A": 3, "V": 3}``.
        attn_dropout: dropout on attention weights (crossmodal from text, and memory).
        attn_dropout_audio: the same for crossmodal transformers whose source is audio
            (``None``: ``attn_dropout``).
        attn_dropout_vision: the same for source vision (``None``: ``attn_dropout``).
        relu_dropout, res_dropout: feed-forward and residual dropout of every block.
        embed_dropout: on the text input and on the inputs of every transformer.
        out_dropout: inside the residual output MLP.
        causal: no output step reads a later input step: causal attention in every
            transformer and left-only padding of the convolutions (MulT's code: causal
            attention; here: off).
        use_padding_mask: attention ignores padded steps (MulT's code: no mask).
        pooling: ``"last"`` (last valid step) or ``"mean"`` (masked mean).
        head: ``"regression"`` (output ``(batch,)``) or ``"classification"``
            (``(batch, num_classes)`` logits).
        num_classes: classes of the classification head (7: sentiment -3..3).
        vocab_size: text comes as token ids ``(batch, time)`` (0 = padding) in
            ``[0, vocab_size)``; ``None``: text is float features.
        max_len: longest sequence (positional encoding).
        positional: layout of the sinusoidal positions of every transformer, ``"tutorial"``
            (interleaved, counted from 0; the default) or ``"fairseq"`` (the official MulT
            code's); see :mod:`cormult_lib.nn.positions`.
        causal_rule: how ``causal`` attention lines up unequal lengths, ``"relative"`` (the
            default) or ``"shifted"`` (MulT's code); see
            :func:`~cormult_lib.nn.attention.attention_mask`.

    Attributes:
        modalities: the modalities used, canonical order (``("T", "A", "V")``).
        directions: the crossmodal keys ``"S->T"`` (:func:`directions`).
        head: ``"regression"`` or ``"classification"``.
        combined_dim: width of the pooled, concatenated representation (``6d`` / ``2d``).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        modalities: str | Sequence[str] | None = None,
        hidden_dim: int = 40,
        num_heads: int = 8,
        num_layers: int = 4,
        kernel_sizes: Mapping[str, int] | Sequence[int] | None = None,
        attn_dropout: float = 0.1,
        attn_dropout_audio: float | None = None,
        attn_dropout_vision: float | None = None,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.3,
        out_dropout: float = 0.1,
        causal: bool = False,
        use_padding_mask: bool = True,
        pooling: str = "last",
        head: str = "regression",
        num_classes: int = 7,
        vocab_size: int | None = None,
        max_len: int = 1024,
        positional: str = "tutorial",
        causal_rule: str = "relative",
    ):
        super().__init__()
        self.modalities = parse_modalities(
            list(input_dims) if modalities is None else modalities, min_count=2
        )
        missing = [m for m in self.modalities if m not in input_dims]
        if missing:
            raise ValueError(
                f"input_dims lacks modalities {missing} of modalities={''.join(self.modalities)}"
            )
        if hidden_dim < 1 or num_heads < 1 or hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim={hidden_dim} must be a positive multiple of num_heads={num_heads}"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if vocab_size is not None and vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (0 = padding), got {vocab_size}")
        out_dim = check_head(head, num_classes)
        kernels = _kernel_sizes(kernel_sizes, self.modalities)
        self.input_dims = {m: int(input_dims[m]) for m in self.modalities}
        self.vocab_size = vocab_size if "T" in self.modalities else None
        self.id_modalities = ("T",) if self.vocab_size is not None else ()
        self.hidden_dim, self.pooling, self.head = hidden_dim, pooling, head
        self.causal, self.use_padding_mask = causal, use_padding_mask
        self.positional, self.causal_rule = positional, causal_rule
        self.directions = directions(self.modalities)
        #: Zero steps added (left, right) before each convolution.
        self.conv_padding = {
            m: (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2) for m, k in kernels.items()
        }

        self.text_embedding = (
            nn.Embedding(self.vocab_size, hidden_dim, padding_idx=0)
            if self.vocab_size is not None
            else None
        )
        self.embed_dropout = embed_dropout
        self.projections = nn.ModuleDict(
            {
                m: nn.Identity()
                if m in self.id_modalities or self.input_dims[m] == hidden_dim
                else nn.Conv1d(
                    self.input_dims[m],
                    hidden_dim,
                    kernels[m],
                    bias=False,
                )
                for m in self.modalities
            }
        )
        source_dropout = {
            "T": attn_dropout,
            "A": attn_dropout if attn_dropout_audio is None else attn_dropout_audio,
            "V": attn_dropout if attn_dropout_vision is None else attn_dropout_vision,
        }
        shared = {
            "relu_dropout": relu_dropout,
            "res_dropout": res_dropout,
            "embed_dropout": embed_dropout,
            "causal": causal,
            "max_len": max_len,
            "positional": positional,
            "causal_rule": causal_rule,
        }
        # All crossmodal transformers in one stack (member i: direction self.directions[i]),
        # all memory transformers in another (member i: target self.modalities[i]); see
        # cormult_lib.nn.attention for how a stack computes its members at once.
        self.crossmodal_encoders = TransformerEncoder(
            hidden_dim,
            num_heads,
            num_layers,
            attn_dropout=[source_dropout[key.split("->")[0]] for key in self.directions],
            count=len(self.directions),
            **shared,
        )
        sources = len(self.modalities) - 1
        self.memory_encoders = TransformerEncoder(
            sources * hidden_dim,
            num_heads,
            max(num_layers, 3),
            attn_dropout=attn_dropout,
            count=len(self.modalities),
            **shared,
        )
        self.combined_dim = len(self.modalities) * sources * hidden_dim
        self.proj1 = nn.Linear(self.combined_dim, self.combined_dim)
        self.proj2 = nn.Linear(self.combined_dim, self.combined_dim)
        self.out_dropout = out_dropout
        self.out_layer = nn.Linear(self.combined_dim, out_dim)

    def _check(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        return check_inputs(features, masks, self.input_dims, self.id_modalities, self.vocab_size)

    def _project(
        self, features: Mapping[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``F'_m`` ``(batch, time, d)`` per modality from checked inputs."""
        projected = {}
        for m in self.modalities:
            x, mask = features[m], masks[m]
            if m in self.id_modalities:
                x = self.text_embedding(torch.where(mask, x, 0))
                x = dropout(x, self.embed_dropout, self.training)
            else:
                x = torch.where(mask[..., None], x, 0.0)
                if m == "T":
                    x = dropout(x, self.embed_dropout, self.training)
                if not isinstance(self.projections[m], nn.Identity):
                    padded = F.pad(x.transpose(1, 2), self.conv_padding[m])
                    x = self.projections[m](padded).transpose(1, 2)
            projected[m] = x
        return projected

    def _crossmodal(
        self, projected: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Every ``h_{S->T}`` = crossmodal transformer ``S->T`` (queries ``F'_T``, keys and
        values ``F'_S``), the directions of equal lengths computed together."""
        targets = [key.split("->")[1] for key in self.directions]
        sources = [key.split("->")[0] for key in self.directions]
        lengths = {
            i: (projected[t].shape[1], projected[s].shape[1])
            for i, (t, s) in enumerate(zip(targets, sources, strict=True))
        }
        out = {}
        for members in stack_groups(lengths):
            stack = self._stack(projected, masks, [targets[i] for i in members])
            context = self._stack(projected, masks, [sources[i] for i in members])
            encoded = self.crossmodal_encoders(
                *stack, *context, members=None if len(members) == len(targets) else members
            )
            out.update({self.directions[i]: h for i, h in zip(members, encoded, strict=True)})
        return out

    def _stack(
        self, tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], keys: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tensors[k]`` for ``keys`` stacked ``(len(keys), batch, time, .)`` and their
        attention masks (``None`` without ``use_padding_mask``)."""
        stacked = torch.stack([tensors[k] for k in keys])
        if not self.use_padding_mask:
            return stacked, None
        return stacked, torch.stack([masks[k] for k in keys])

    def project(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``F'_m = Conv1D(F_m)``: modality -> ``(batch, time_m, d)`` (section 3.3.1).

        ``features`` / ``masks`` as in :meth:`forward`.
        """
        return self._project(features, self._check(features, masks))

    def crossmodal(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The crossmodal outputs ``h_{S->T}``: key ``"S->T"`` -> ``(batch, time_T, d)``.

        ``features`` / ``masks`` as in :meth:`forward`; keys as :attr:`directions`.
        """
        masks = self._check(features, masks)
        return self._crossmodal(self._project(features, masks), masks)

    def fuse(
        self,
        crossmodal: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        weights: Mapping[str, torch.Tensor | float] | None = None,
        target_weights: Mapping[str, torch.Tensor | float] | None = None,
    ) -> torch.Tensor:
        """Weighting, memory transformers and pooling: ``(batch, combined_dim)``.

        Args:
            crossmodal: :meth:`crossmodal`'s outputs, key ``"S->T"`` -> ``(batch, time_T, d)``.
            masks: modality -> ``(batch, time)`` bool, ``True`` on real steps.
            weights: optional key ``"S->T"`` -> ``(batch,)`` tensor (or a number) multiplying
                that crossmodal output; keys left out keep weight 1.
            target_weights: optional target modality -> ``(batch,)`` factor on its pooled
                memory output ``H'_T`` (after the memory transformer's final LayerNorm), where
                no later normalisation can cancel it; modalities left out keep weight 1.
        """
        like = next(iter(crossmodal.values()))
        factors = self._check_weights(weights, like)
        pooled_factors = self._check_weights(target_weights, like, keys=self.modalities)
        inputs = {}
        for target in self.modalities:
            keys = [k for k in self.directions if k.endswith(f"->{target}")]
            parts = [
                crossmodal[k] if k not in factors else crossmodal[k] * factors[k][:, None, None]
                for k in keys
            ]
            inputs[target] = torch.cat(parts, dim=-1)
        pool = last_valid if self.pooling == "last" else masked_mean
        pooled = {}
        targets = list(self.modalities)
        for members in stack_groups({i: inputs[t].shape[1] for i, t in enumerate(targets)}):
            group = [targets[i] for i in members]
            memory = self.memory_encoders(
                *self._stack(inputs, masks, group),
                members=None if len(members) == len(targets) else members,
            )
            pooled.update({m: pool(h, masks[m]) for m, h in zip(group, memory, strict=True)})
        for m, factor in pooled_factors.items():
            pooled[m] = pooled[m] * factor[:, None]
        return torch.cat([pooled[m] for m in self.modalities], dim=-1)

    def _check_weights(
        self,
        weights: Mapping[str, torch.Tensor | float] | None,
        like: torch.Tensor,
        keys: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weights as ``(batch,)`` tensors on the device and in the dtype of ``like``; their
        keys must be out of ``keys`` (default: the directions ``"S->T"``)."""
        batch = like.shape[0]
        keys = self.directions if keys is None else keys
        factors = {}
        for key, value in (weights or {}).items():
            if key not in keys:
                raise ValueError(f"weights has key {key!r}; expected keys out of {keys}")
            w = torch.as_tensor(value).to(like.device, like.dtype)
            if w.ndim == 0:
                w = w.expand(batch)
            if w.shape != (batch,):
                raise ValueError(
                    f"weights[{key!r}] must be a number or a (batch,) = ({batch},) tensor, got "
                    f"shape {tuple(w.shape)}"
                )
            factors[key] = w
        return factors

    def output(self, representation: torch.Tensor) -> torch.Tensor:
        """Residual MLP and head on :meth:`fuse`'s ``(batch, combined_dim)``: ``(batch,)``
        scores or ``(batch, num_classes)`` logits."""
        hidden = F.relu(self.proj1(representation))
        hidden = self.proj2(dropout(hidden, self.out_dropout, self.training))
        out = self.out_layer(hidden + representation)
        return out.squeeze(-1) if self.head == "regression" else out

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
        weights: Mapping[str, torch.Tensor | float] | None = None,
        target_weights: Mapping[str, torch.Tensor | float] | None = None,
    ) -> torch.Tensor:
        """Predict sentiment.

        Args:
            features: modality -> ``(batch, time_m, d_in)`` float32, or ``(batch, time_T)``
                int64 token ids for text when ``vocab_size`` is set. Lengths may differ
                between modalities; modalities beyond :attr:`modalities` are ignored.
            masks: modality -> ``(batch, time_m)`` bool, ``True`` on real steps (all real when
                missing).
            weights: key ``"S->T"`` -> ``(batch,)`` factor on the crossmodal output
                ``h_{S->T}`` (CorMulT's ``h' = h * Cor``); ``None``: plain MulT.
            target_weights: target modality -> ``(batch,)`` factor on the pooled memory
                output (see :meth:`fuse`).

        Returns:
            ``(batch,)`` sentiment scores (regression) or ``(batch, num_classes)`` logits.
        """
        masks = self._check(features, masks)
        crossmodal = self._crossmodal(self._project(features, masks), masks)
        return self.output(self.fuse(crossmodal, masks, weights, target_weights))


def mult_arguments(config: ModelConfig) -> dict:
    """:class:`MulT`'s keyword arguments for the sizes and dropouts of a
    :class:`~cormult_lib.config.ModelConfig` (``embed_dropout`` is MulT's text-embedding
    dropout; ``attn_dropout`` applies to every crossmodal block)."""
    return {
        "hidden_dim": config.hidden_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_layers,
        "kernel_sizes": config.kernel_sizes,
        "attn_dropout": config.attn_dropout,
        "relu_dropout": config.relu_dropout,
        "res_dropout": config.res_dropout,
        "embed_dropout": config.embed_dropout,
        "out_dropout": config.out_dropout,
        "causal": config.causal,
        "pooling": config.pooling,
        "positional": config.positional,
    }


def build_mult(
    input_dims: Mapping[str, int],
    config: ModelConfig,
    modalities: str | Sequence[str] | None = None,
    head: str = "regression",
    vocab_size: int | None = None,
) -> MulT:
    """A :class:`MulT` with the sizes and dropouts of a :class:`~cormult_lib.config.ModelConfig`
    (:func:`mult_arguments`)."""
    return MulT(input_dims, modalities, **mult_arguments(config), head=head, vocab_size=vocab_size)


def mult_from_official(
    state_dict: Mapping[str, torch.Tensor],
    input_dims: Mapping[str, int],
    num_heads: int,
    num_layers: int,
    **options,
) -> MulT:
    """A :class:`MulT` holding the weights of the official MulT code's ``MULTModel``.

    The official configuration (``yaohungt/Multimodal-Transformer``, ``src/models.py`` and the
    defaults of ``main.py``), which the returned model follows:

    * modalities T, A, V with all six crossmodal transformers (``--lonly``, ``--aonly`` and
      ``--vonly`` all on, the official default; its partial modes are not supported);
    * hidden size ``d = 30`` for every modality (hard-coded there; read here from
      ``proj_l.weight``); memory transformers of ``2d`` and ``max(num_layers, 3)`` layers;
    * projections ``Conv1d(d_in, d, kernel_size=1, bias=False)``, skipped when ``d_in == d``
      (their weight is still stored; it must be there and is dropped);
    * causal attention (``--attn_mask`` is on unless given) with its diagonal shifted by the
      length difference (``causal_rule="shifted"``), and no padding mask;
    * fairseq's positional table (sines | cosines, positions from 1; ``positional="fairseq"``,
      see :mod:`cormult_lib.nn.positions`, also for how it counts padding);
    * the last step of each memory transformer, a residual MLP and ``out_layer``: one output
      (``output_dim`` 1, CMU-MOSI / MOSEI) gives ``head="regression"`` with ``(batch,)``
      scores where the official model returns ``(batch, 1)``; more outputs (IEMOCAP: 8) give
      ``head="classification"`` with those logits;
    * dropouts of ``main.py``: attention 0.1 (sources audio and vision 0.0), ReLU 0.1, residual
      0.1, embedding 0.2, output 0.0 (:data:`OFFICIAL_OPTIONS`).

    ``num_heads`` (``main.py``: 5) cannot be read from the weights; ``num_layers`` (``--nlevels``,
    5) is checked against them. The official ``save_model`` pickles the whole module: with the
    official code importable, ``torch.load(path, weights_only=False).state_dict()`` is the
    ``state_dict`` to pass. In eval mode the result computes the official model's function on
    inputs without padding (every step real, as the official code sees them); padding is read
    from masks here and from zero features there (:mod:`cormult_lib.nn.positions`).

    Args:
        state_dict: the official ``MULTModel.state_dict()`` (mapped by the tables of
            :mod:`cormult_lib.models.official_mult`).
        input_dims: ``{"T": orig_d_l, "A": orig_d_a, "V": orig_d_v}``.
        num_heads: attention heads (must divide ``d``).
        num_layers: layers of each crossmodal transformer.
        **options: other :class:`MulT` arguments, overriding :data:`OFFICIAL_OPTIONS` (dropouts
            for fine-tuning, ``max_len``, ...); those of :data:`OFFICIAL_FIXED` are refused.

    Returns:
        A :class:`MulT` (training mode, as built) with the official weights; ``forward``
        takes ``(batch, time_m, d_in)`` features as usual.

    Raises:
        ValueError: the state dict lacks a key, has an unexpected one or a tensor of another
            shape than this configuration needs (the message names the key).
        TypeError: ``options`` holds an argument of :data:`OFFICIAL_FIXED`.
    """
    fixed = [name for name in OFFICIAL_FIXED if name in options]
    if fixed:
        raise TypeError(f"mult_from_official: {fixed} are set by the official checkpoint")
    hidden = int(required(state_dict, "proj_l.weight", "it gives the hidden size").shape[0])
    outputs = int(required(state_dict, "out_layer.weight", "it gives the outputs").shape[0])
    head = "regression" if outputs == 1 else "classification"
    model = MulT(
        input_dims,
        MODALITIES,
        hidden_dim=hidden,
        num_heads=num_heads,
        num_layers=num_layers,
        kernel_sizes=(1, 1, 1),
        head=head,
        num_classes=max(outputs, 2),
        **{**OFFICIAL_OPTIONS, **options},
    )
    layout = official_layout(model)
    check_official(state_dict, layout, model, num_layers)
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        for key, (project, member, _) in layout.items():
            if project is None:
                continue
            value = torch.as_tensor(state_dict[key])
            target = weights[project] if member is None else weights[project][member]
            target.copy_(value)
    model.load_state_dict(weights)
    return model

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.config import ModelConfig
from cormult_lib.modalities import MODALITY_NAMES, parse_modalities
from reference.attention_v1 import TransformerEncoder

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


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(batch, time, d)`` over the steps where ``mask`` ``(batch, time)`` is
    ``True``: ``(batch, d)``; zeros for a sample without valid steps. Padded values (even NaN)
    are never read."""
    total = torch.where(mask[..., None], x, 0.0).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` ``(batch, time, d)`` at the last step where ``mask`` ``(batch, time)`` is ``True``:
    ``(batch, d)``; zeros for a sample without valid steps. Works for start- and end-padding."""
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, steps, -1).amax(dim=1)  # (batch,), -1 when empty
    picked = x[torch.arange(x.shape[0], device=x.device), last.clamp(min=0)]
    return torch.where((last >= 0)[:, None], picked, 0.0)


def check_inputs(
    features: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    input_dims: Mapping[str, int],
    id_modalities: Sequence[str] = (),
    vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Validate a batch for a model over ``input_dims``' modalities; returns their masks.

    Args:
        features: modality -> ``(batch, time, input_dims[m])`` float, or ``(batch, time)``
            integer ids for the modalities in ``id_modalities``. Other modalities are ignored.
        masks: modality -> ``(batch, time)`` bool, ``True`` on real steps; missing: all real.
        input_dims: modality -> feature size, for the modalities the model needs.
        id_modalities: modalities given as token ids in ``[0, vocab_size)``.
        vocab_size: the size of the vocabulary of those ids.

    Returns:
        modality -> bool mask ``(batch, time)`` for every modality of ``input_dims``.
    """
    masks = dict(masks or {})
    missing = [m for m in input_dims if m not in features]
    if missing:
        raise ValueError(
            f"features lack modalities {missing}; the model was built for "
            f"{''.join(input_dims)} and got {''.join(sorted(features))}"
        )
    sizes = {m: features[m].shape[0] for m in input_dims}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"features have different batch sizes per modality: {sizes}")
    out = {}
    for m, dim in input_dims.items():
        x = features[m]
        name = f"features[{m!r}] ({MODALITY_NAMES[m]})"
        if m in id_modalities:
            if x.ndim != 2 or x.is_floating_point():
                raise ValueError(
                    f"{name} must be integer token ids (batch, time) since vocab_size is set; "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
        elif x.ndim != 3 or x.shape[2] != dim or not x.is_floating_point():
            hint = " (token ids need vocab_size)" if x.ndim == 2 else ""
            raise ValueError(
                f"{name} must be float (batch, time, {dim}); got {x.dtype} {tuple(x.shape)}{hint}"
            )
        mask = masks.get(m)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise ValueError(
                f"masks[{m!r}] must be bool {tuple(x.shape[:2])} (True = real step), got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if m in id_modalities and mask.any():
            valid = x[mask]
            low, high = int(valid.min()), int(valid.max())
            if low < 0 or high >= vocab_size:
                raise ValueError(
                    f"{name} holds ids in [{low}, {high}] on real steps, outside "
                    f"[0, {vocab_size}); vocab_size must be the size of the vocabulary"
                )
        out[m] = mask
    return out


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
        sizes = dict(zip("TAV", kernel_sizes, strict=True))
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
        self.embed_dropout = nn.Dropout(embed_dropout)
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
        }
        self.crossmodal_encoders = nn.ModuleDict(
            {
                key: TransformerEncoder(
                    hidden_dim,
                    num_heads,
                    num_layers,
                    attn_dropout=source_dropout[key.split("->")[0]],
                    **shared,
                )
                for key in self.directions
            }
        )
        sources = len(self.modalities) - 1
        self.memory_encoders = nn.ModuleDict(
            {
                m: TransformerEncoder(
                    sources * hidden_dim,
                    num_heads,
                    max(num_layers, 3),
                    attn_dropout=attn_dropout,
                    **shared,
                )
                for m in self.modalities
            }
        )
        self.combined_dim = len(self.modalities) * sources * hidden_dim
        self.proj1 = nn.Linear(self.combined_dim, self.combined_dim)
        self.proj2 = nn.Linear(self.combined_dim, self.combined_dim)
        self.out_dropout = nn.Dropout(out_dropout)
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
                x = self.embed_dropout(self.text_embedding(torch.where(mask, x, 0)))
            else:
                x = torch.where(mask[..., None], x, 0.0)
                if m == "T":
                    x = self.embed_dropout(x)
                if not isinstance(self.projections[m], nn.Identity):
                    padded = F.pad(x.transpose(1, 2), self.conv_padding[m])
                    x = self.projections[m](padded).transpose(1, 2)
            projected[m] = x
        return projected

    def _attention_masks(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {m: masks[m] if self.use_padding_mask else None for m in self.modalities}

    def _crossmodal(
        self, projected: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        attention = self._attention_masks(masks)
        out = {}
        for key in self.directions:
            source, target = key.split("->")
            out[key] = self.crossmodal_encoders[key](
                projected[target], attention[target], projected[source], attention[source]
            )
        return out

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
    ) -> torch.Tensor:
        """Weighting, memory transformers and pooling: ``(batch, combined_dim)``.

        Args:
            crossmodal: :meth:`crossmodal`'s outputs, key ``"S->T"`` -> ``(batch, time_T, d)``.
            masks: modality -> ``(batch, time)`` bool, ``True`` on real steps.
            weights: optional key ``"S->T"`` -> ``(batch,)`` tensor (or a number) multiplying
                that crossmodal output; keys left out keep weight 1.
        """
        factors = self._check_weights(weights, next(iter(crossmodal.values())))
        attention = self._attention_masks(masks)
        pooled = []
        for target in self.modalities:
            keys = [k for k in self.directions if k.endswith(f"->{target}")]
            parts = [
                crossmodal[k] if k not in factors else crossmodal[k] * factors[k][:, None, None]
                for k in keys
            ]
            memory = self.memory_encoders[target](torch.cat(parts, dim=-1), attention[target])
            pool = last_valid if self.pooling == "last" else masked_mean
            pooled.append(pool(memory, masks[target]))
        return torch.cat(pooled, dim=-1)

    def _check_weights(
        self, weights: Mapping[str, torch.Tensor | float] | None, like: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weights as ``(batch,)`` tensors on the device and in the dtype of ``like``."""
        batch = like.shape[0]
        factors = {}
        for key, value in (weights or {}).items():
            if key not in self.directions:
                raise ValueError(
                    f"weights has key {key!r}; keys are 'source->target' out of {self.directions}"
                )
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
        hidden = self.proj2(self.out_dropout(F.relu(self.proj1(representation))))
        out = self.out_layer(hidden + representation)
        return out.squeeze(-1) if self.head == "regression" else out

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
        weights: Mapping[str, torch.Tensor | float] | None = None,
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

        Returns:
            ``(batch,)`` sentiment scores (regression) or ``(batch, num_classes)`` logits.
        """
        masks = self._check(features, masks)
        crossmodal = self._crossmodal(self._project(features, masks), masks)
        return self.output(self.fuse(crossmodal, masks, weights))


def build_mult(
    input_dims: Mapping[str, int],
    config: ModelConfig,
    modalities: str | Sequence[str] | None = None,
    head: str = "regression",
    vocab_size: int | None = None,
) -> MulT:
    """A :class:`MulT` with the sizes and dropouts of a :class:`~cormult_lib.config.ModelConfig`
    (``embed_dropout`` is MulT's text-embedding dropout; ``attn_dropout`` applies to every
    crossmodal block)."""
    return MulT(
        input_dims,
        modalities,
        hidden_dim=config.hidden_dim,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        kernel_sizes=config.kernel_sizes,
        attn_dropout=config.attn_dropout,
        relu_dropout=config.relu_dropout,
        res_dropout=config.res_dropout,
        embed_dropout=config.embed_dropout,
        out_dropout=config.out_dropout,
        causal=config.causal,
        pooling=config.pooling,
        head=head,
        vocab_size=vocab_size,
    )

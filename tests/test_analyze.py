"""analyze(): one sentence through a model, every number the explorer shows, checked.

Two models: the small trained translation run (conftest.py), whose hypotheses end with
<eos>, and an untrained two-layer model over a made-up symbol vocabulary, whose
hypotheses run to the length limit, and which shows that any `Vocabulary` will do.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from transformer import Transformer, TransformerConfig
from transformer.decoding import analyze as analyze_module
from transformer.decoding.analyze import analyze, analyze_sources, encode_source
from transformer.decoding.beam import gnmt_length_penalty
from transformer.decoding.translate import DecodingOptions, translate_texts
from transformer.errors import UserError
from transformer.run.rundir import load_run

SENTENCES = ["the cat sees a book .", "a dog eats the red car .", "my friend holds some bread ."]
PAPER = DecodingOptions(beam_size=4, length_penalty=0.6, max_len_a=1.0, max_len_b=50)


@pytest.fixture(scope="module")
def trained(trained_translation_run):
    run = load_run(trained_translation_run)
    return run.model, run.source


class Letters:
    """A vocabulary of single letters: ids 0-3 special, then 'a'..'z'."""

    pad_id, bos_id, eos_id = 0, 1, 2
    SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")

    def encode(self, text: str) -> list[int]:
        return [4 + ord(c) - ord("a") for c in text if "a" <= c <= "z"]

    def encode_known(self, texts):
        return [self.encode(text) for text in texts], [[] for _ in texts]

    def decode(self, ids) -> str:
        return "".join(chr(ord("a") + i - 4) for i in ids if i >= 4)

    def token(self, id: int) -> str:
        return self.SPECIAL[id] if id < 4 else chr(ord("a") + id - 4)


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(1)
    cfg = TransformerConfig(src_vocab_size=30, tgt_vocab_size=30, d_model=32, n_heads=4, d_ff=64,
                            n_encoder_layers=2, n_decoder_layers=3, max_len=12, dropout=0.1)
    return Transformer(cfg).eval(), Letters()


def check_answer(answer: dict, cfg: TransformerConfig, n_best: int, attention: bool) -> None:
    """Every invariant of an answer that holds for any model."""
    source, target, decoder_in = (answer["source_tokens"], answer["target_tokens"],
                                  answer["decoder_input_tokens"])
    S, T = len(source), len(target)
    assert source[-1] == "<eos>" and target[-1] == "<eos>"
    assert decoder_in == ["<bos>"] + target[:-1]
    assert len(answer["token_probs"]) == len(answer["alternatives"]) == T
    assert all(0.0 < p <= 1.0 for p in answer["token_probs"])

    hypotheses = answer["hypotheses"]
    assert len(hypotheses) == n_best
    best = hypotheses[0]
    assert best["text"] == answer["translation"] and best["tokens"] == target[:-1]
    scores = [h["score"] for h in hypotheses]
    assert scores == sorted(scores, reverse=True)
    # The best hypothesis' token probabilities are the parts of its log-probability.
    assert sum(math.log(p) for p in answer["token_probs"]) == pytest.approx(best["log_prob"], abs=1e-4)
    assert answer["checkpoint"] is None

    for t, options in enumerate(answer["alternatives"]):
        probs = [o["prob"] for o in options]
        assert probs == sorted(probs, reverse=True) and all(0.0 < p <= 1.0 for p in probs)
        assert probs[0] >= answer["token_probs"][t] - 1e-6  # nothing chosen beats the top one
        assert not {"<pad>", "<bos>"} & {o["token"] for o in options}

    assert ("attention" in answer) == attention
    if attention:
        check_attention(answer["attention"], cfg, S, T)
    json.dumps(answer, allow_nan=False)  # plain JSON, as the server sends it


def check_attention(maps: dict, cfg: TransformerConfig, S: int, T: int) -> None:
    shapes = {"encoder": (cfg.n_encoder_layers, S, S), "decoder": (cfg.n_decoder_layers, T, T),
              "cross": (cfg.n_decoder_layers, T, S)}
    assert set(maps) == set(shapes)
    for kind, (layers, rows, cols) in shapes.items():
        weights = torch.tensor(maps[kind])  # nested lists of equal lengths, or this fails
        assert tuple(weights.shape) == (layers, cfg.n_heads, rows, cols), kind
        # Each row a distribution, up to the rounding to 3 decimals of each of its entries.
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=cols * 5e-4 + 1e-6), kind
        assert bool((weights >= 0).all())
        if kind == "decoder":  # causal: no query sees a later position
            assert bool((weights.triu(diagonal=1) == 0).all())


@pytest.mark.parametrize("n_best,attention", [(1, False), (3, True), (4, True)])
def test_answer_of_a_trained_model(trained, n_best, attention):
    model, tokenizer = trained
    for text in SENTENCES:
        answer = analyze(model, tokenizer, text, PAPER, beam=4, n_best=n_best,
                         attention=attention)
        check_answer(answer, model.cfg, n_best, attention)
        assert answer["source_tokens"][:-1] == [tokenizer.token(i) for i in tokenizer.encode(text)]


@pytest.mark.parametrize("n_best,attention", [(1, True), (2, False), (5, True)])
def test_answer_of_an_untrained_model_with_another_vocabulary(untrained, n_best, attention):
    model, vocab = untrained
    answer = analyze(model, vocab, "hello there", PAPER, beam=5, n_best=n_best, attention=attention,
                     alternatives=3)
    check_answer(answer, model.cfg, n_best, attention)
    assert answer["source_tokens"] == list("hellothere") + ["<eos>"]
    assert all(len(options) == 3 for options in answer["alternatives"])


def test_score_is_the_log_prob_over_the_length_penalty(trained):
    """For hypotheses that ended with <eos>: beam search's score and the forward pass agree."""
    model, tokenizer = trained
    answer = analyze(model, tokenizer, SENTENCES[1], PAPER, n_best=4)
    for h in answer["hypotheses"]:
        assert len(h["tokens"]) < model.cfg.max_len - 1  # ended, not cut at the limit
        lp = gnmt_length_penalty(len(h["tokens"]) + 1, 0.6)
        assert h["score"] * lp == pytest.approx(h["log_prob"], abs=1e-4)


@pytest.mark.parametrize("beam", [1, 2, 4])
def test_translation_is_what_translate_gives(trained, beam):
    model, tokenizer = trained
    expected = translate_texts(model, tokenizer, SENTENCES, PAPER, beam_size=beam)
    got = [analyze(model, tokenizer, text, PAPER, beam=beam)["translation"]
           for text in SENTENCES]
    assert got == expected


def test_attention_off_and_on_give_the_same_numbers(trained):
    """Recording attention takes the readable path; the probabilities must not notice."""
    model, tokenizer = trained
    plain = analyze(model, tokenizer, SENTENCES[0], PAPER, n_best=2)
    recorded = analyze(model, tokenizer, SENTENCES[0], PAPER, n_best=2, attention=True)
    assert recorded.pop("attention")
    for a, b in zip(plain["hypotheses"], recorded["hypotheses"], strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["log_prob"] == pytest.approx(b["log_prob"], abs=1e-5)
    assert recorded["token_probs"] == pytest.approx(plain["token_probs"], abs=1e-5)


def test_a_model_in_training_mode_is_analysed_without_dropout_and_left_so(untrained):
    model, vocab = untrained
    expected = analyze(model, vocab, "abc", PAPER, attention=True)
    model.train()
    try:
        assert analyze(model, vocab, "abc", PAPER, attention=True) == expected
        assert model.training
    finally:
        model.eval()


def test_no_alternatives(untrained):
    model, vocab = untrained
    answer = analyze(model, vocab, "abc", PAPER, alternatives=0)
    assert answer["alternatives"] == [[] for _ in answer["target_tokens"]]
    with pytest.raises(ValueError, match="alternatives"):
        analyze(model, vocab, "abc", PAPER, alternatives=-1)


def test_a_symbol_the_vocabulary_lacks_is_left_out_of_the_source(trained):
    model, tokenizer = trained
    ids = encode_source(tokenizer, "the cat ⚽ sees", model.cfg.max_len)
    assert ids == tokenizer.encode("the cat sees") and tokenizer.decode(ids) == "the cat sees"
    answer = analyze(model, tokenizer, "the cat ⚽ sees", PAPER)
    assert answer == analyze(model, tokenizer, "the cat sees", PAPER)


@pytest.mark.parametrize("text,names", [
    ("", ["empty"]),
    ("   ", ["empty"]),
    ("⚽ 🏖️", ["empty", "vocabulary lacks"]),
    (" ".join(["the red car"] * 20), ["limit of 31 tokens", "max_len=32"]),
])
def test_bad_text_is_a_user_error(trained, text, names):
    model, tokenizer = trained
    for call in (lambda: analyze(model, tokenizer, text, PAPER),
                 lambda: encode_source(tokenizer, text, model.cfg.max_len)):
        with pytest.raises(UserError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and all(name in message for name in names), message


def test_the_longest_text_allowed(untrained):
    model, vocab = untrained
    answer = analyze(model, vocab, "a" * (model.cfg.max_len - 1), PAPER, attention=True)
    assert len(answer["source_tokens"]) == model.cfg.max_len
    check_answer(answer, model.cfg, 1, True)


def test_many_sources_at_once_answer_as_one_at_a_time(trained, monkeypatch):
    model, tokenizer = trained
    texts = ["the cat sees", "a dog runs to the red car", "the man", "two dogs sit"]
    # Three hypotheses a source, at most seven rows a teacher-forced pass: two passes of two
    # sources each, so that a wrong row offset within a pass, or across passes, would show.
    monkeypatch.setattr(analyze_module, "TEACHER_FORCED_ROWS", 7)
    sources = [encode_source(tokenizer, text, model.cfg.max_len) for text in texts]
    together = analyze_sources(model, tokenizer, sources, PAPER, beam=3, n_best=3)
    for text, answer in zip(texts, together):
        alone = analyze(model, tokenizer, text, PAPER, beam=3, n_best=3)
        assert [h["tokens"] for h in answer["hypotheses"]] == [h["tokens"] for h in alone["hypotheses"]]
        assert answer["target_tokens"] == alone["target_tokens"]
        for got, expected in zip(answer["hypotheses"], alone["hypotheses"]):
            assert got["log_prob"] == pytest.approx(expected["log_prob"], abs=1e-4)
            assert got["score"] == pytest.approx(expected["score"], abs=1e-4)
        assert answer["token_probs"] == pytest.approx(alone["token_probs"], abs=1e-5)

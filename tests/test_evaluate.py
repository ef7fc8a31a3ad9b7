"""Spec for evaluate.py: detokenized sacreBLEU with its signature; and what
`transformer evaluate RUN_DIR` scores when given no --src/--ref."""

import math

import pytest
import sacrebleu

from transformer.decoding.bleu import corpus_bleu, tokenized_bleu
from transformer.errors import UserError

from kit import assert_user_error, run_main, train_translation_run, write_corpus


def test_identical_text_scores_100():
    sentences = ["A man rides a bike.", "Two dogs play in the snow!"]
    score, _ = corpus_bleu(sentences, list(sentences))
    assert score == pytest.approx(100.0)


def test_hand_computed_case():
    # Every n-gram of the hypothesis matches (precisions 4/4, 3/3, 2/2, 1/1), but it is
    # one word short: brevity penalty exp(1 - 5/4).
    score, _ = corpus_bleu(["a b c d"], ["a b c d e"])
    assert score == pytest.approx(100 * math.exp(-0.25))


def test_matches_sacrebleu_corpus_bleu():
    hypotheses = ["The cat sat on the mat.", "A dog runs in the park", "hello , world"]
    references = ["The cat is sitting on the mat.", "A dog is running in the park.", "Hello, world"]
    score, _ = corpus_bleu(hypotheses, references)
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert score == pytest.approx(expected)
    assert 0.0 < score < 100.0


def test_cased_by_default():
    lower, _ = corpus_bleu(["the cat sat on the mat"], ["The Cat sat on the Mat"])
    assert lower < 100.0


def test_signature_names_the_settings():
    _, signature = corpus_bleu(["a b c d"], ["a b c d"])
    for part in ("nrefs:1", "tok:13a", "case:mixed", "smooth:exp"):
        assert part in signature.split("|")


def test_count_mismatch_is_a_user_error():
    with pytest.raises(UserError, match="2 hypotheses and 1 references"):
        corpus_bleu(["a", "b"], ["a"])


def test_empty_input_is_a_user_error():
    with pytest.raises(UserError):
        corpus_bleu([], [])


# --- `transformer evaluate RUN_DIR` on a run trained on its own files --------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Training files, and validation files made of their first 12 lines."""
    folder = tmp_path_factory.mktemp("corpus")
    src, tgt = write_corpus(folder)
    for train_file, name in ((src, "valid.en"), (tgt, "valid.de")):
        lines = train_file.read_text(encoding="utf-8").splitlines(keepends=True)[:12]
        (folder / name).write_text("".join(lines), encoding="utf-8")
    return folder


def test_a_parallel_run_is_scored_on_its_validation_files(corpus, capsys):
    run_dir = corpus / "with-valid"
    train_translation_run(run_dir, corpus / "train.en", corpus / "train.de",
                          "--valid-src", corpus / "valid.en", "--valid-tgt", corpus / "valid.de")
    capsys.readouterr()  # the training's output
    code, out, err = run_main(capsys, ["evaluate", run_dir, "--beam", "1"])
    assert code == 0, err
    assert str(corpus / "valid.en") in out and str(corpus / "valid.de") in out
    assert "12 sentences" in out and "test_2016" not in out


def test_a_parallel_run_without_validation_files_asks_for_them(corpus, capsys):
    run_dir = corpus / "held-out"
    train_translation_run(run_dir, corpus / "train.en", corpus / "train.de")
    capsys.readouterr()
    code, out, err = run_main(capsys, ["evaluate", run_dir])
    assert_user_error(code, err, run_dir, "held out", "--src", "--ref")
    assert "BLEU" not in out


def test_tokenized_bleu_is_the_papers_moses_tokens_with_compounds_split():
    from sacrebleu.metrics import BLEU

    from transformer.decoding.bleu import tokenized_bleu
    hypotheses = ["Die Rhein-Main-Region ist schön.", "Ein Hund läuft, schnell!"]
    references = ["Die Rhein-Neckar-Region ist schön.", "Ein Hund rennt, schnell!"]
    by_hand = (["Die Rhein ##AT##-##AT## Main ##AT##-##AT## Region ist schön .",
                "Ein Hund läuft , schnell !"],
               ["Die Rhein ##AT##-##AT## Neckar ##AT##-##AT## Region ist schön .",
                "Ein Hund rennt , schnell !"])
    expected = BLEU(tokenize="none", force=True).corpus_score(by_hand[0], [by_hand[1]]).score
    assert tokenized_bleu(hypotheses, references, "de") == pytest.approx(expected)
    assert tokenized_bleu(references, references, "de") == pytest.approx(100.0)
    with pytest.raises(UserError, match="one reference per hypothesis"):
        tokenized_bleu(hypotheses, references[:1], "de")


def test_lowercased_tokenized_bleu_ignores_case_and_keeps_compounds_whole():
    hypothesis = ["Ein Mann fährt mit dem Fahrrad durch den Rhein-Main-Park."]
    reference = ["ein Mann fährt mit dem Fahrrad durch den rhein-main-park."]
    lowered = tokenized_bleu(hypothesis, reference, "de", split_compounds=False, lowercase=True)
    assert lowered == pytest.approx(100.0)
    assert tokenized_bleu(hypothesis, reference, "de", split_compounds=False) < 80


def test_evaluate_takes_a_length_penalty(corpus, capsys):
    run_dir = corpus / "with-valid"  # trained by the test above (files run in order)
    if not run_dir.exists():
        train_translation_run(run_dir, corpus / "train.en", corpus / "train.de",
                              "--valid-src", corpus / "valid.en", "--valid-tgt", corpus / "valid.de")
    capsys.readouterr()
    code, out, err = run_main(capsys, ["evaluate", run_dir, "--beam", "2", "--length-penalty", "1"])
    assert code == 0 and "beam 2, length penalty 1," in out, err
    code, out, err = run_main(capsys, ["evaluate", run_dir, "--length-penalty", "-0.5"])
    assert_user_error(code, err, "--length-penalty", "at least 0")

"""`transformer export RUN_DIR --to ctranslate2`: the engine, given the exported model,
computes what this project computes: CTranslate2's greedy decoding gives the tokens of
`translate --beam 1` on every sentence, for post-LN and pre-LN, joint and separate
vocabularies; quantized to int8 it still translates; bad requests are one line, exit 2."""

import math
import shutil
import sys

import pytest

from transformer.decoding.translate import translate
from transformer.run.rundir import load_run

from kit import assert_user_error, run_main, train_translation_run, write_corpus

ctranslate2 = pytest.importorskip(
    "ctranslate2", reason='the export extra is not installed (pip install -e ".[export]")')

SENTENCES = ["the cat sees a book .", "a dog eats the red car .", "my friend holds some bread .",
             "the child finds an apple .", "a woman likes the ball ."]


def engine_greedy(model_dir, run, sentences):
    """CTranslate2's greedy tokens (ids) of each sentence, with this project's length limit
    and its never-chosen <pad> and <bos>."""
    translator = ctranslate2.Translator(str(model_dir), device="cpu")
    options = run.settings.train.decoding
    results = []
    for text in sentences:
        tokens = [run.source.token(i) for i in run.source.encode(text)]
        n = len(tokens) + 1  # the source's <eos> counts, as in beam_search
        limit = min(math.floor(options.max_len_a * n + options.max_len_b), run.model.cfg.max_len - 1)
        found = translator.translate_batch([tokens], beam_size=1, max_decoding_length=limit,
                                           suppress_sequences=[["<pad>"], ["<bos>"]])
        results.append([run.target.inner.token_to_id(t) for t in found[0].hypotheses[0]])
    return results


def our_greedy(run, sentences):
    ids = [run.source.encode(text) for text in sentences]
    found = translate(run.model, run.source, ids, run.settings.train.decoding, beam_size=1)
    return [hypotheses[0][0] for hypotheses in found]


@pytest.fixture(scope="module")
def runs(trained_translation_run, tmp_path_factory):
    """The shared trained run (post-LN, joint BPE), and a pre-LN unigram run with separate
    vocabularies trained here."""
    folder = tmp_path_factory.mktemp("export")
    train_translation_run(folder / "pre-ln", *write_corpus(folder), "--steps", 30, "--set",
                          "warmup=10", "norm_first=true", "vocab=separate", "tokenizer=unigram",
                          "vocab_size=120")
    return {"post-ln joint": trained_translation_run, "pre-ln separate": folder / "pre-ln"}


@pytest.mark.parametrize("kind", ["post-ln joint", "pre-ln separate"])
def test_engine_greedy_equals_translate_beam_1(runs, kind, tmp_path, capsys):
    code, out, err = run_main(capsys, ["export", runs[kind], "--to", "ctranslate2", "--out",
                                       tmp_path / "ct2"])
    assert code == 0 and out.strip() == str(tmp_path / "ct2"), err
    run = load_run(runs[kind])
    ours = our_greedy(run, SENTENCES)
    assert all(ours) and engine_greedy(tmp_path / "ct2", run, SENTENCES) == ours


def test_int8_translates_and_an_existing_folder_needs_overwrite(runs, tmp_path, capsys):
    run_dir, out = runs["post-ln joint"], tmp_path / "ct2"
    assert run_main(capsys, ["export", run_dir, "--out", out, "--quantization", "int8"])[0] == 0
    run = load_run(run_dir)
    assert all(engine_greedy(out, run, SENTENCES))  # words come out of the int8 model
    code, _, err = run_main(capsys, ["export", run_dir, "--out", out])
    assert_user_error(code, err, str(out), "--overwrite")
    code, _, err = run_main(capsys, ["export", run_dir, "--out", out, "--overwrite"])
    assert code == 0, err


def test_a_run_the_engine_cannot_express_is_refused(runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["post-ln joint"], run_dir)
    config = run_dir / "config.json"
    config.write_text(config.read_text().replace(
        '"train":', '"ablation": {"variant": "no-scaling"}, "train":', 1))
    code, _, err = run_main(capsys, ["export", run_dir, "--out", tmp_path / "ct2"])
    assert_user_error(code, err, "'no-scaling'", "unscaled_attention", "cannot express")
    assert not (tmp_path / "ct2").exists()


def test_without_the_package_export_says_how_to_install_it(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2.converters", None)  # import fails
    code, _, err = run_main(capsys, ["export", runs["post-ln joint"], "--out", tmp_path / "ct2"])
    assert_user_error(code, err, 'pip install -e ".[export]"')

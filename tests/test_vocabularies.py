"""Tokenizer choices: BPE or unigram, one joint vocabulary or one for each side. A run
with separate vocabularies ties only the decoder's input and output embeddings (said once,
in the data line) and works everywhere a run is used: translate, score, evaluate, plot,
serve, the explorer, averaging, resume."""

import contextlib
import io
import json

import pytest

from transformer.checkpoint.averaging import save_average
from transformer.checkpoint.catalogue import step_checkpoints
from transformer.data.prepared import PreparedCorpus, prepare_corpus
from transformer.run.rundir import load_run
from transformer.serving.explorer_page import explore
from transformer.serving.service import TranslationService

from kit import run_main, train_translation_run, write_corpus


@pytest.fixture(scope="module")
def separate_run(tmp_path_factory):
    """A unigram run with separate vocabularies of 120 ids a side, 4 steps saved at 2 and 4."""
    folder = tmp_path_factory.mktemp("separate")
    src, tgt = write_corpus(folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_translation_run(folder / "run", src, tgt, "--set", "vocab=separate",
                              "tokenizer=unigram", "vocab_size=120", "save_every=2")
    return folder, printed.getvalue()


def test_unigram_and_bpe_both_prepare(tmp_path):
    src, tgt = write_corpus(tmp_path)
    for model in ("bpe", "unigram"):
        out = prepare_corpus(src, tgt, tmp_path / model, vocab_size=100, tokenizer=model,
                             say=lambda text: None)
        corpus = PreparedCorpus(out)
        assert corpus.tokenizers["src"] is corpus.tokenizers["tgt"]  # joint: one object
        tokenizer = corpus.tokenizers["src"]
        assert tokenizer.decode(tokenizer.encode("the cat sees a book .")) == "the cat sees a book ."
        assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == \
            {"bpe": "BPE", "unigram": "Unigram"}[model]


def test_a_separate_run_has_two_vocabularies_and_ties_the_decoder_only(separate_run):
    folder, printed = separate_run
    run_dir = folder / "run"
    assert (run_dir / "tokenizer.src.json").is_file() and (run_dir / "tokenizer.tgt.json").is_file()
    assert not (run_dir / "tokenizer.json").exists()
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert model["tie_embeddings"] == "decoder"  # "all" asked (the default): not possible
    assert model["src_vocab_size"] <= 120 and model["tgt_vocab_size"] <= 120
    data_lines = [line for line in printed.splitlines() if line.startswith("data: ")]
    assert len(data_lines) == 1 and "separate vocabularies of" in data_lines[0]
    assert "the source embedding is not tied to the target's" in data_lines[0]
    run = load_run(run_dir)
    assert run.source is not run.target
    assert run.source.token(run.source.encode("cat")[0]) != "<unk>"  # English in the source's
    assert run.target.unk_id not in run.target.encode("katze")  # German in the target's


def test_every_command_uses_the_two_vocabularies(separate_run, capsys):
    folder, _ = separate_run
    run_dir = folder / "run"
    code, out, err = run_main(capsys, ["translate", run_dir, "the cat sees a book ."])
    assert code == 0 and out.strip(), err
    (folder / "one.en").write_text("the cat sees a book .\n")
    (folder / "one.de").write_text("die katze sieht ein buch .\n")
    code, out, err = run_main(capsys, ["score", run_dir, "--src", folder / "one.en",
                                       "--tgt", folder / "one.de", "--tokens"])
    assert code == 0 and "<eos>" in out and "<unk>" not in out, err
    code, out, err = run_main(capsys, ["evaluate", run_dir, "--src", folder / "one.en",
                                       "--ref", folder / "one.de", "--beam", "1"])
    assert code == 0 and out.startswith("BLEU = "), err
    code, out, err = run_main(capsys, ["plot", run_dir, "--attention", "the cat sees a book ."])
    assert code == 0 and "attention-cross-layer1.png" in out, err
    answer = TranslationService(run_dir).translate({"text": "the cat sees a book .",
                                                    "attention": True})
    assert answer["source_tokens"][-1] == "<eos>" and answer["decoder_input_tokens"][0] == "<bos>"
    assert explore(run_dir, "a dog eats the ball .", folder / "page.html").is_file()


def test_a_separate_run_averages_and_resumes(separate_run, capsys):
    folder, _ = separate_run
    run_dir = folder / "run"
    averaged = save_average(run_dir, step_checkpoints(run_dir))
    assert load_run(run_dir, averaged).model.cfg.tie_embeddings == "decoder"
    code, _, err = run_main(capsys, ["train", "--resume", run_dir, "--steps", "6", "--quiet"])
    assert code == 0, err
    assert step_checkpoints(run_dir)[-1].name == "step-000006"

"""A prepared corpus: tokenized once, stored as memory-mapped arrays of ids, read back
exactly; preparing again is a no-op or names what changed; bad input leaves nothing
half-written; training from it equals training from the files."""

import json

import numpy as np
import pytest

from transformer.data import prepared
from transformer.data.parallel import find_multi30k_dir
from transformer.data.prepared import PreparedCorpus, prepare_corpus
from transformer.data.tokenizer import Tokenizer
from transformer.errors import UserError

from kit import (
    TINY_MODEL,
    assert_user_error,
    metrics,
    run_main,
    train_translation_run,
    write_corpus,
)


def prepare(folder, out_name="prepared", **kwargs):
    src, tgt = folder / "train.en", folder / "train.de"
    said = []
    out = prepare_corpus(src, tgt, folder / out_name, vocab_size=200, say=said.append, **kwargs)
    return out, said


@pytest.fixture
def corpus_files(tmp_path):
    write_corpus(tmp_path)
    return tmp_path


def test_the_ids_are_the_tokenizers_and_lie_end_to_end(corpus_files):
    out, said = prepare(corpus_files, batch_lines=7)
    corpus = PreparedCorpus(out)
    en = (corpus_files / "train.en").read_text(encoding="utf-8").splitlines()
    de = (corpus_files / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(corpus) == 198  # 200 pairs, the last 1% (2) held out for validation
    assert corpus.valid_pairs() == list(zip(en[198:], de[198:]))
    tokenizer = Tokenizer.load(out / "tokenizer.json")
    for i in (0, 7, 197):
        src, tgt = corpus.pair(i)
        assert src.tolist() == tokenizer.encode(en[i]) and tgt.tolist() == tokenizer.encode(de[i])
    assert corpus.ids["src"].dtype == np.uint16 and isinstance(corpus.ids["src"], np.memmap)
    assert corpus.offsets["src"][0] == 0 and len(corpus.offsets["src"]) == 199
    assert corpus.lengths().tolist()[3] == [len(tokenizer.encode(en[3])), len(tokenizer.encode(de[3]))]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["src"]["bytes"] == (corpus_files / "train.en").stat().st_size
    assert len(manifest["inputs"]["tgt"]["sha256"]) == 64
    assert manifest["settings"]["vocab_size"] == 200 and manifest["train"] == 198
    assert said == [f"data: prepared 198 training pairs into {out}"]
    assert prepared._dtype(65536) == np.uint16 and prepared._dtype(65537) == np.uint32


def test_the_tokenizer_learns_from_a_sample_spread_over_the_corpus(corpus_files):
    """198 training pairs, a sample of 6: every 33rd pair (0, 33, 66, ...), from every part
    of the corpus. No sampled pair says "hält": an "ä" is unknown to that tokenizer, not
    to one that learnt from every pair."""
    sampled = Tokenizer.load(prepare(corpus_files, tokenizer_sample=6)[0] / "tokenizer.json")
    whole = Tokenizer.load(prepare(corpus_files, "whole")[0] / "tokenizer.json")
    assert sampled.unk_id in sampled.encode("hält") and whole.unk_id not in whole.encode("hält")
    # Pairs 132 and 165 say "isst" (the first six pairs never do): a whole-word piece.
    assert "▁isst" in sampled.inner.get_vocab()


def test_preparing_again_is_a_no_op_and_a_change_is_named(corpus_files):
    out, _ = prepare(corpus_files)
    stamp = (out / "train.src.ids").stat().st_mtime_ns
    _, said = prepare(corpus_files)
    assert said == [f"data: {out} is already prepared from these inputs with these settings"]
    assert (out / "train.src.ids").stat().st_mtime_ns == stamp
    with open(corpus_files / "train.de", "a", encoding="utf-8") as f:
        f.write("ein hund .\n")
    with open(corpus_files / "train.en", "a", encoding="utf-8") as f:
        f.write("a dog .\n")
    _, said = prepare(corpus_files, tokenizer_sample=50)
    assert said[0] == (f"data: {out} was prepared from other inputs (src, tgt), "
                       "settings (tokenizer_sample); preparing it again")
    assert len(PreparedCorpus(out)) == 199


def test_memory_holds_the_batch_in_flight_not_the_corpus(corpus_files, monkeypatch):
    sizes, real = [], Tokenizer.encode_batch

    def encode_batch(self, texts):
        sizes.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(Tokenizer, "encode_batch", encode_batch)
    prepare(corpus_files, batch_lines=16)
    assert max(sizes) == 16 and sum(sizes) == 2 * 198  # every training sentence, 16 at a time


@pytest.mark.parametrize("damage,named", [
    (lambda f: (f / "train.de").write_text("eins\nzwei\n"), ["train.de ends before line 3"]),
    (lambda f: (f / "train.en").write_bytes(b"a\nb\xff\n" + b"c\n" * 198), ["train.en:2", "UTF-8"]),
    (lambda f: (f / "train.en").write_text(""), ["train.en: file is empty"]),
])
def test_bad_input_is_one_line_and_leaves_nothing(corpus_files, damage, named):
    damage(corpus_files)
    with pytest.raises(UserError) as error:
        prepare(corpus_files)
    assert all(name in str(error.value) for name in named), error.value
    assert sorted(p.name for p in corpus_files.iterdir()) == ["train.de", "train.en"]


def test_a_write_that_fails_half_way_leaves_nothing(corpus_files, monkeypatch):
    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Tokenizer, "save", full_disk)
    with pytest.raises(UserError, match="cannot write the prepared corpus .No space left"):
        prepare(corpus_files)
    assert sorted(p.name for p in corpus_files.iterdir()) == ["train.de", "train.en"]


def test_a_folder_that_is_not_prepared_or_of_another_format(corpus_files):
    with pytest.raises(UserError, match="not a prepared corpus"):
        PreparedCorpus(corpus_files)
    out, _ = prepare(corpus_files)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(UserError, match="format 99"):
        PreparedCorpus(out)


def test_training_from_a_prepared_folder_equals_training_from_the_files(corpus_files, capsys):
    src, tgt = corpus_files / "train.en", corpus_files / "train.de"
    code, _, err = run_main(capsys, ["data", "prepare", "--src", src, "--tgt", tgt,
                                     "--out", corpus_files / "prepared", "--set", "vocab_size=200"])
    assert code == 0, err
    train_translation_run(corpus_files / "from-files", src, tgt, "--set", "log_every=1")
    train_translation_run(corpus_files / "from-data", src, tgt, "--data",
                          corpus_files / "prepared", "--set", "log_every=1")
    losses = [[r["loss"] for r in metrics(corpus_files / name) if r["kind"] == "train"]
              for name in ("from-files", "from-data")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert (corpus_files / "from-data" / "tokenizer.json").is_file()
    assert not (corpus_files / "from-data" / "data").exists()  # the folder given, not a copy


def test_data_prepare_refuses_keys_that_shape_no_corpus(corpus_files, capsys):
    code, _, err = run_main(capsys, ["data", "prepare", "--src", corpus_files / "train.en",
                                     "--tgt", corpus_files / "train.de", "--out",
                                     corpus_files / "p", "--set", "d_model=64"])
    assert_user_error(code, err, "d_model", "vocab_size, tokenizer_sample")
    code, _, err = run_main(capsys, ["data", "prepare", "--out", corpus_files / "p"])
    assert_user_error(code, err, "--src FILE --tgt FILE")


def test_multi30k_is_prepared_once_for_every_run(tmp_path, capsys, monkeypatch):
    try:
        find_multi30k_dir()
    except UserError as error:
        pytest.skip(f"Multi30k not found: {error}")
    monkeypatch.setenv("TRANSFORMER_CACHE", str(tmp_path / "cache"))
    args = ["--steps", "1", "--set", *TINY_MODEL, "vocab_size=300", "batch_tokens=256",
            "eval_every=1000", "bleu_every=1000", "max_len=64"]
    said = []
    for name in ("first", "second"):
        code, out, err = run_main(capsys, ["train", "multi30k", "--out", tmp_path / name, *args])
        assert code == 0, err
        said.append([line for line in out.splitlines() if line.startswith("data: ")][0])
        assert not (tmp_path / name / "data").exists() and (tmp_path / name / "tokenizer.json").is_file()
    folder = tmp_path / "cache" / "prepared" / "multi30k-en-de-bpe-joint-300-2000000"
    assert said == [f"data: prepared 29,000 training pairs into {folder}",
                    f"data: {folder} is already prepared from these inputs with these settings"]


def test_a_run_refuses_a_corpus_prepared_again_with_other_settings(corpus_files, capsys):
    src, tgt = corpus_files / "train.en", corpus_files / "train.de"
    prepared = corpus_files / "prepared"
    assert run_main(capsys, ["data", "prepare", "--src", src, "--tgt", tgt, "--out", prepared,
                             "--set", "vocab_size=200"])[0] == 0
    train_translation_run(corpus_files / "run", src, tgt, "--data", prepared, "--set",
                          "save_every=2")
    assert run_main(capsys, ["data", "prepare", "--src", src, "--tgt", tgt, "--out", prepared,
                             "--set", "vocab_size=150"])[0] == 0
    code, _, err = run_main(capsys, ["train", "--resume", corpus_files / "run", "--steps", "6"])
    assert_user_error(code, err, str(prepared), "not the one this run began with")

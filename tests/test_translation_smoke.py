"""End to end on a slice of Multi30k: train a small model for a few hundred steps on
real sentence pairs, translate a file, score with sacreBLEU. Not about quality (that is
benchmarks/multi30k.sh), about every piece of the pipeline working together: the one
bound on quality is that the model beats copying its English source."""


import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF, TER

from transformer.cli.main import main
from transformer.data.parallel import find_multi30k_dir, load_multi30k
from transformer.decoding.bleu import corpus_bleu
from transformer.errors import UserError

from kit import metrics

try:
    DATA = find_multi30k_dir()
except UserError as error:  # pragma: no cover - the data ships beside the repository
    pytest.skip(f"Multi30k not found: {error}", allow_module_level=True)


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)  # conftest's per-test setting comes after module fixtures
    tmp = tmp_path_factory.mktemp("smoke")
    train = load_multi30k("train", "en", "de")[:3000]
    valid = load_multi30k("val", "en", "de")[:60]
    args = ["train", "parallel",
            "--src", write(tmp / "train.en", [s for s, _ in train]),
            "--tgt", write(tmp / "train.de", [t for _, t in train]),
            "--valid-src", write(tmp / "valid.en", [s for s, _ in valid]),
            "--valid-tgt", write(tmp / "valid.de", [t for _, t in valid]),
            "--set", "vocab_size=1500", "d_model=64", "n_heads=4", "d_ff=128",
            "n_encoder_layers=1", "n_decoder_layers=1", "dropout=0.1", "max_len=64",
            "batch_tokens=1024", "warmup=100", "lr_factor=1.0", "eval_every=100",
            "bleu_every=200", "beam_size=2", "log_every=10",
            "--steps", "400", "--out", str(tmp / "run"), "--quiet"]
    assert main(args) == 0
    return tmp


def test_training_loss_falls(run):
    records = metrics(run / "run")
    train = [r["loss"] for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert train[-1] < 0.75 * train[0], (train[0], train[-1])
    assert evals[-1]["loss"] < evals[0]["loss"]
    # Copying the English source scores about 0.2 here (names, numbers, punctuation). A
    # model that ignores its source (this run with the encoder output zeroed) still learns
    # some German and scores 1.2 to 1.9, hence the margin; this one reaches about 6.
    sources = (run / "valid.en").read_text(encoding="utf-8").splitlines()
    references = (run / "valid.de").read_text(encoding="utf-8").splitlines()
    copy_bleu, _ = corpus_bleu(sources, references)
    assert "bleu" in evals[-1] and evals[-1]["bleu"] > copy_bleu + 3.0, (evals[-1], copy_bleu)
    assert 0 < evals[-1]["chrf"] <= 100  # chrF beside BLEU in every BLEU record
    assert (run / "run" / "tokenizer.json").exists()
    assert (run / "run" / "checkpoints" / "best" / "model.safetensors").exists()


def test_translate_gives_one_line_per_input_line(run, capsys):
    lines = ["A man is riding a bike.", "", "Two dogs play in the snow.", "A woman sings."]
    capsys.readouterr()
    assert main(["translate", str(run / "run"), "--beam", "2",
                 "--input", write(run / "input.en", lines)]) == 0
    out = capsys.readouterr().out.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines)
    assert out[1] == ""  # an empty line translates to an empty line
    assert all(out[i] for i in (0, 2, 3))


def test_evaluate_prints_bleu_and_signature(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run / "run"), "--src", str(run / "valid.en"),
                 "--ref", str(run / "valid.de"), "--beam", "1", "--output", str(run / "val.hyp")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("BLEU = ") and "nrefs:1" in out and "tok:13a" in out
    hypotheses = (run / "val.hyp").read_text().splitlines()
    assert len(hypotheses) == 60
    # The other scores, each recomputed here from the written output with sacreBLEU itself.
    references = (run / "valid.de").read_text().splitlines()
    expected = {"lowercased BLEU": BLEU(lowercase=True), "chrF": CHRF(),
                "chrF++": CHRF(word_order=2), "TER": TER()}
    printed = dict(line.split("  (")[0].split(" = ") for line in out.splitlines() if " = " in line)
    for name, metric in expected.items():
        assert float(printed[name]) == pytest.approx(
            metric.corpus_score(hypotheses, [references]).score, abs=0.006), name
    assert "case:lc" in out and "lowercased tokenized BLEU" in printed


def test_average_writes_an_averaged_checkpoint(run, capsys):
    assert main(["average", str(run / "run"), "--last", "2"]) == 0
    assert (run / "run" / "checkpoints" / "averaged" / "model.safetensors").exists()

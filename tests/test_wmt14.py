"""`transformer data wmt14`, end to end against a local HTTP server on the loopback that
serves small archives of the real ones' structure: the code that runs on the real
archives is the code tested here (fetch, checksum, extract, clean, SGML, prepare)."""

import functools
import http.server
import io
import json
import tarfile
import threading

import pytest

from transformer.data import wmt14
from transformer.data.prepared import PreparedCorpus
from transformer.errors import UserError

from kit import OBJECTS, SUBJECTS, VERBS, assert_user_error, run_main

PAIRS = [(f"{s} {v} {o} .", f"{SUBJECTS[s]} {VERBS[v]} {OBJECTS[o]} .")
         for s in SUBJECTS for v in VERBS for o in OBJECTS]  # 150 pairs


def tgz(files: dict[str, str]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, text in files.items():
            raw = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return data.getvalue()


def lines(texts) -> str:
    return "".join(text + "\n" for text in texts)


def sgml(texts, kind: str) -> str:
    segments = "".join(f'<seg id="{i + 1}">{html_escape(t)}</seg>\n' for i, t in enumerate(texts))
    return f'<{kind}set setid="newstest2014">\n<doc docid="1">\n{segments}</doc>\n</{kind}set>\n'


def html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the test reads stderr: no request lines on it
        pass


@pytest.fixture
def mirror(tmp_path):
    """The five archives on 127.0.0.1, in the layout of the real ones; yields its URL."""
    site = tmp_path / "site"
    site.mkdir()
    train = PAIRS[:100] + [("", "leer"), ("too " * 300, "zu " * 300), ("a b c d", "a")]
    parts = [train[:40], train[40:80], train[80:]]
    for (archive, en, de), part in zip(wmt14.TRAIN, parts):
        (site / archive).write_bytes(tgz({en: lines(s for s, _ in part),
                                          de: lines(t for _, t in part)}))
    (site / "dev.tgz").write_bytes(tgz({wmt14.VALID[1]: lines(s for s, _ in PAIRS[100:120]),
                                        wmt14.VALID[2]: lines(t for _, t in PAIRS[100:120])}))
    test = PAIRS[120:] + [("Tom & Jerry <3", "Tom & Jerry <3")]
    (site / "test-full.tgz").write_bytes(tgz({wmt14.TEST[1]: sgml((s for s, _ in test), "src"),
                                              wmt14.TEST[2]: sgml((t for _, t in test), "ref")}))
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_check_extract_clean_prepare(mirror, tmp_path, capsys):
    site, url = mirror
    out = tmp_path / "wmt14"
    code, printed, err = run_main(capsys, ["data", "wmt14", "--out", out, "--mirror", url,
                                           "--set", "vocab_size=150"])
    assert code == 0, err
    assert printed.count("no published SHA-256; recorded") == 5  # none pinned: recorded
    assert ("wmt14: 100 training pairs kept; dropped: 1 with an empty side, 1 over 250 words, "
            "1 with a length ratio over 1.5") in printed
    assert (out / "train.en").read_text().splitlines() == [s for s, _ in PAIRS[:100]]
    assert (out / "valid.de").read_text().splitlines() == [t for _, t in PAIRS[100:120]]
    test_en = (out / "test.en").read_text().splitlines()
    assert test_en[:-1] == [s for s, _ in PAIRS[120:]] and test_en[-1] == "Tom & Jerry <3"
    corpus = PreparedCorpus(out / "prepared")
    assert len(corpus) == 100 and len(corpus.valid_pairs()) == 20
    recorded = json.loads((out / "downloads" / "checksums.json").read_text())
    assert set(recorded) == set(wmt14.ARCHIVES)

    # Again: the archives pass their recorded sums, nothing is fetched, nothing re-prepared.
    code, printed, err = run_main(capsys, ["data", "wmt14", "--out", out, "--mirror", url,
                                           "--set", "vocab_size=150"])
    assert code == 0 and "recorded" not in printed and "already prepared" in printed, err


def test_an_archive_that_does_not_match_its_checksum_is_refused(mirror, tmp_path, capsys):
    site, url = mirror
    out = tmp_path / "wmt14"
    assert run_main(capsys, ["data", "wmt14", "--out", out, "--mirror", url])[0] == 0
    (out / "downloads" / "dev.tgz").unlink()  # fetched again, from a changed mirror
    (site / "dev.tgz").write_bytes(tgz({wmt14.VALID[1]: "x\n", wmt14.VALID[2]: "y\n"}))
    code, _, err = run_main(capsys, ["data", "wmt14", "--out", out, "--mirror", url])
    recorded = json.loads((out / "downloads" / "checksums.json").read_text())["dev.tgz"]
    assert_user_error(code, err, "dev.tgz: SHA-256", f"expected {recorded}", "nothing was extracted")
    assert not (out / "downloads" / "dev.tgz").exists()
    assert not (out / "downloads" / "dev.tgz.part").exists()


def test_a_download_that_fails_or_an_archive_without_its_file(mirror, tmp_path):
    site, url = mirror
    (site / "dev.tgz").unlink()
    with pytest.raises(UserError, match="dev.tgz: download failed"):
        wmt14.download_wmt14(tmp_path / "a", url, say=lambda text: None)
    (site / "dev.tgz").write_bytes(tgz({"dev/other.en": "x\n"}))
    with pytest.raises(UserError, match="has no file dev/newstest2013.en"):
        wmt14.download_wmt14(tmp_path / "b", url, say=lambda text: None)


def test_train_wmt14_reads_the_prepared_folder_and_evaluate_its_test_set(mirror, tmp_path, capsys):
    site, url = mirror
    out = tmp_path / "wmt14"
    assert wmt14.download_wmt14(out, url, say=lambda text: None, vocab_size=150) == out
    run_dir = tmp_path / "run"
    code, _, err = run_main(capsys, ["train", "wmt14", "--data-dir", out, "--out", run_dir,
                                     "--steps", "2", "--quiet", "--set", "d_model=32",
                                     "n_heads=2", "d_ff=64", "n_encoder_layers=1",
                                     "n_decoder_layers=1", "batch_tokens=256", "max_len=64",
                                     "eval_every=1000", "precision=fp32"])
    assert code == 0, err
    code, printed, err = run_main(capsys, ["evaluate", run_dir, "--beam", "1"])
    assert code == 0 and "newstest2014" in printed and f"{len(PAIRS) - 120 + 1} sentences" in printed, err
    assert "tokenized BLEU = " in printed and "not comparable with sacreBLEU" in printed
    code, _, err = run_main(capsys, ["train", "wmt14", "--data-dir", tmp_path / "none",
                                     "--out", tmp_path / "run2"])
    assert_user_error(code, err, "no prepared WMT14 corpus", "transformer data wmt14")

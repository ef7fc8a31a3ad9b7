"""Parallel text: reading line-aligned files, finding/loading/downloading Multi30k."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil

import pytest

from transformer.data import parallel
from transformer.data.parallel import (
    download_multi30k,
    find_multi30k_dir,
    load_multi30k,
    read_lines,
    read_parallel,
)
from transformer.errors import UserError


def multi30k_or_skip():
    try:
        return find_multi30k_dir()
    except UserError as e:
        pytest.skip(f"Multi30k data folder absent: {e}")


def write(path, data: bytes):
    path.write_bytes(data)
    return path


# --- read_lines ----------------------------------------------------------------------

def test_plain_and_gzip_read_the_same_stripped_lines(tmp_path):
    data = " Ein Hund läuft. \n\nZwei Männer\t\n".encode()
    plain = write(tmp_path / "a.txt", data)
    packed = write(tmp_path / "a.txt.gz", gzip.compress(data))
    expected = ["Ein Hund läuft.", "", "Zwei Männer"]
    assert read_lines(plain) == expected
    assert read_lines(packed) == expected


def test_last_line_without_newline_and_crlf_and_bom(tmp_path):
    path = write(tmp_path / "a.txt", "\ufeffone\r\ntwo".encode())
    assert read_lines(path) == ["one", "two"]


def test_only_newline_splits_lines(tmp_path):
    # U+2028 and U+0085 are line breaks to str.splitlines; here they must stay inside the line.
    path = write(tmp_path / "a.txt", "a\u2028b\nc\u0085d\n".encode())
    assert len(read_lines(path)) == 2


def test_missing_file(tmp_path):
    path = tmp_path / "nope.en"
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: no such file$"):
        read_lines(path)


def test_directory(tmp_path):
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path))}: is a directory"):
        read_lines(tmp_path)


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path, data):
    path = write(tmp_path / "empty.de", data)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: file is empty$"):
        read_lines(path)


def test_empty_gzip(tmp_path):
    path = write(tmp_path / "empty.de.gz", gzip.compress(b""))
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: file is empty$"):
        read_lines(path)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = write(tmp_path / "latin1.de", "eins\nzwei\nMädchen\n".encode("latin-1"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:3: not valid UTF-8") as info:
        read_lines(path)
    assert "\n" not in str(info.value)


def test_undecodable_bytes_inside_gzip(tmp_path):
    path = write(tmp_path / "x.de.gz", gzip.compress(b"ok\n\xff\xfe\n"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:2: not valid UTF-8"):
        read_lines(path)


@pytest.mark.parametrize("data", [b"this is not gzip at all\n", gzip.compress(b"a\nb\n" * 100, mtime=0)[:-12]], ids=["not gzip", "truncated gzip"])
def test_corrupt_or_truncated_gzip(tmp_path, data):
    path = write(tmp_path / "bad.en.gz", data)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: not a valid gzip file") as info:
        read_lines(path)
    assert "\n" not in str(info.value)


# --- read_parallel -------------------------------------------------------------------

def test_read_parallel_keeps_pairs_in_order(tmp_path):
    src = write(tmp_path / "s.en", b"a\nb\nc\n")
    tgt = write(tmp_path / "t.de", gzip.compress(b"x\ny\nz"))
    tgt = tgt.rename(tmp_path / "t.de.gz")
    assert read_parallel(src, tgt) == [("a", "x"), ("b", "y"), ("c", "z")]


def test_mismatched_line_counts_name_both_files_counts_and_line(tmp_path):
    src = write(tmp_path / "s.en", b"a\nb\nc\n")
    tgt = write(tmp_path / "t.de", b"x\ny\n")
    with pytest.raises(UserError) as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert str(src) in message and str(tgt) in message
    assert "3 lines" in message and "has 2" in message
    assert f"{tgt} ends before line 3" in message


# --- Multi30k ------------------------------------------------------------------------

def test_load_multi30k_val_has_1014_aligned_pairs():
    folder = multi30k_or_skip()
    pairs = load_multi30k("val", "en", "de", data_dir=folder)
    assert len(pairs) == 1014
    assert all(src and tgt for src, tgt in pairs)
    assert pairs[0][0].startswith("A group of men")
    assert pairs[0][1].startswith("Eine Gruppe von Männern")


@pytest.mark.parametrize("args, key", [
    (("dev", "en", "de"), "split"),
    (("val", "xx", "de"), "src_lang"),
    (("val", "en", "zz"), "tgt_lang"),
    (("val", "en", "en"), "tgt_lang"),
])
def test_load_multi30k_rejects_bad_values(args, key):
    with pytest.raises(UserError, match=rf"^{key}: "):
        load_multi30k(*args)


def test_find_multi30k_dir_env_var_accepts_folder_or_parent(tmp_path, monkeypatch):
    folder = tmp_path / "multi30k"
    folder.mkdir()
    write(folder / "val.en.gz", gzip.compress(b"a\n"))
    monkeypatch.setenv("TRANSFORMER_DATA", str(folder))
    assert find_multi30k_dir() == folder
    monkeypatch.setenv("TRANSFORMER_DATA", str(tmp_path))
    assert find_multi30k_dir() == folder
    assert find_multi30k_dir(tmp_path) == folder


def test_find_multi30k_dir_explicit_wrong_path_is_reported(tmp_path):
    with pytest.raises(UserError, match="Multi30k data not found") as info:
        find_multi30k_dir(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(info.value)


def test_find_multi30k_dir_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(parallel, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        find_multi30k_dir()
    message = str(info.value)
    assert str(tmp_path / "env") in message and str(tmp_path / "repo") in message
    assert "TRANSFORMER_DATA" in message


# --- download ------------------------------------------------------------------------

def fake_upstream(tmp_path, monkeypatch, files: dict[str, bytes], checksums: dict[str, str] | None = None):
    """A file:// 'upstream' folder holding `files`, and the checksum table patched to match."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for name, data in files.items():
        write(upstream / name, data)
    table = checksums or {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    monkeypatch.setattr(parallel, "MULTI30K_SHA256", table)
    return upstream.as_uri()


def test_download_from_file_url(tmp_path, monkeypatch):
    files = {"val.en.gz": gzip.compress(b"A dog.\n"), "val.de.gz": gzip.compress(b"Ein Hund.\n")}
    url = fake_upstream(tmp_path, monkeypatch, files)
    out = tmp_path / "out" / "multi30k"
    paths = download_multi30k(out, base_url=url)
    assert [p.name for p in paths] == ["val.en.gz", "val.de.gz"]
    assert all(p.read_bytes() == files[p.name] for p in paths)
    assert sorted(p.name for p in out.iterdir()) == ["val.de.gz", "val.en.gz"]  # no leftovers
    assert read_parallel(*paths) == [("A dog.", "Ein Hund.")]
    # A second run keeps the verified files instead of fetching them again.
    shutil.rmtree(tmp_path / "upstream")
    assert download_multi30k(out, base_url=url) == paths


def test_download_checksum_mismatch_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    files = {"val.en.gz": gzip.compress(b"A dog.\n")}
    url = fake_upstream(tmp_path, monkeypatch, files, checksums={"val.en.gz": "0" * 64})
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"checksum mismatch for val\.en\.gz"):
        download_multi30k(out, base_url=url)
    assert list(out.iterdir()) == []


def test_download_failure_names_the_file(tmp_path, monkeypatch):
    url = fake_upstream(tmp_path, monkeypatch, {}, checksums={"val.cs.gz": "0" * 64})
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"download of val\.cs\.gz failed") as info:
        download_multi30k(out, base_url=url)
    assert "\n" not in str(info.value)
    assert list(out.iterdir()) == []


def test_download_of_the_real_files_matches_the_pinned_checksums(tmp_path):
    folder = multi30k_or_skip()
    paths = download_multi30k(tmp_path, base_url=folder.as_uri())
    assert len(paths) == 12
    assert {p.name for p in paths} == set(parallel.MULTI30K_SHA256)
    assert len(read_lines(tmp_path / "test_2016_flickr.cs.gz")) == 1000

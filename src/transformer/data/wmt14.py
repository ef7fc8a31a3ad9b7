"""WMT 2014 English-German, the paper's corpus (Section 5.1): download, check, extract,
clean, prepare.

    transformer data wmt14 --out DIR [--mirror URL] [--set vocab_size=37000 ...]

The training corpora of the standard preparation scripts (Europarl v7, Common Crawl,
News Commentary v9: about 4.5 million pairs), newstest2013 for validation and
newstest2014 for test. Each archive is checked against its SHA-256: a pinned one where a
catalogue publishes it, else the one recorded in DIR/downloads/checksums.json by the
first download (said in the output), which later downloads must match. A mismatch names
both sums and extracts nothing.

    DIR/downloads/*.tgz        the archives, as fetched (a download goes to .part first)
    DIR/train.en, train.de     the training pairs, cleaned: an empty side, more than
                               MAX_WORDS words, or a length ratio above MAX_RATIO dropped
                               (each reason counted in the output)
    DIR/valid.en, valid.de     newstest2013
    DIR/test.en, test.de       newstest2014 (from its SGML), for `transformer evaluate`
    DIR/prepared/              the prepared corpus (prepared.py) that training reads
"""

from __future__ import annotations

import html
import json
import os
import re
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UserError, one_line
from .parallel import sha256_of, stream_lines, stream_parallel
from .prepared import prepare_corpus

UPSTREAM = "https://www.statmt.org/"
# archive -> its path under UPSTREAM, and its SHA-256 where a catalogue publishes one
ARCHIVES = {
    "training-parallel-europarl-v7.tgz": ("wmt13/training-parallel-europarl-v7.tgz", None),
    "training-parallel-commoncrawl.tgz": ("wmt13/training-parallel-commoncrawl.tgz", None),
    "training-parallel-nc-v9.tgz": ("wmt14/training-parallel-nc-v9.tgz", None),
    "dev.tgz": ("wmt14/dev.tgz", None),
    "test-full.tgz": ("wmt14/test-full.tgz", None),
}
# (archive, English member, German member) of each part
TRAIN = [("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en.en",
          "training/europarl-v7.de-en.de"),
         ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en.en", "commoncrawl.de-en.de"),
         ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.de-en.en",
          "training/news-commentary-v9.de-en.de")]
VALID = ("dev.tgz", "dev/newstest2013.en", "dev/newstest2013.de")
TEST = ("test-full.tgz", "test-full/newstest2014-deen-src.en.sgm",
        "test-full/newstest2014-deen-ref.de.sgm")
MAX_WORDS = 250  # the limit of the usual cleaning (Moses' clean-corpus-n)
MAX_RATIO = 1.5  # longer side / shorter side, in words
CHECKSUMS = "checksums.json"


def download_wmt14(out: str | os.PathLike, mirror: str | None = None,
                   say: Callable[[str], None] = print, **prepare_settings) -> Path:
    """Fetch, check, extract, clean and prepare WMT14 en-de into `out`; returns `out`.
    `mirror`: a base URL holding the same archive names (a local copy), checked alike."""
    out = Path(out)
    downloads = out / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVES:
        fetch(name, downloads, mirror, say)
    raw = out / "raw"
    for archive, *members in [*TRAIN, VALID, TEST]:
        extract(downloads / archive, members, raw)
    counts = clean([(raw / en, raw / de) for _, en, de in TRAIN], out / "train.en", out / "train.de")
    say(f"wmt14: {counts['kept']:,} training pairs kept; dropped: {counts['empty']:,} with an "
        f"empty side, {counts['long']:,} over {MAX_WORDS} words, {counts['ratio']:,} with a "
        f"length ratio over {MAX_RATIO}")
    _write_pairs(stream_parallel(raw / VALID[1], raw / VALID[2]), out / "valid.en", out / "valid.de")
    sources, references = list(read_sgml(raw / TEST[1])), list(read_sgml(raw / TEST[2]))
    if len(sources) != len(references):
        raise UserError(f"{raw / TEST[1]} has {len(sources)} segments but {raw / TEST[2]} "
                        f"has {len(references)}")
    _write_pairs(zip(sources, references), out / "test.en", out / "test.de")
    prepare_corpus(out / "train.en", out / "train.de", out / "prepared", out / "valid.en",
                   out / "valid.de", say=say, **prepare_settings)
    return out


def fetch(name: str, downloads: Path, mirror: str | None, say: Callable[[str], None]) -> Path:
    """One archive in `downloads`, checked: fetched unless a copy that passes is there."""
    path, (where, pinned) = downloads / name, ARCHIVES[name]
    recorded = _recorded(downloads)
    expected = pinned or recorded.get(name)
    if path.is_file() and expected and sha256_of(path) == expected:
        return path
    url = (mirror.rstrip("/") + "/" + name) if mirror else UPSTREAM + where
    part = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
    except (urllib.error.URLError, OSError) as error:
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: download failed ({one_line(error)})") from None
    actual = sha256_of(part)
    if expected and actual != expected:
        part.unlink()
        raise UserError(f"{url}: SHA-256 {actual}, expected {expected}: the download is not the "
                        "archive the checksum names; nothing was extracted")
    os.replace(part, path)
    if not expected:
        recorded[name] = actual
        (downloads / CHECKSUMS).write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")
        say(f"wmt14: {name}: no published SHA-256; recorded {actual} in "
            f"{downloads / CHECKSUMS}, which later downloads must match")
    return path


def _recorded(downloads: Path) -> dict:
    try:
        return json.loads((downloads / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def extract(archive: Path, members: list[str], into: Path) -> None:
    """The named members of a tar archive into `into` (their paths kept); UserError naming
    the archive for a damaged one or a missing member."""
    try:
        with tarfile.open(archive) as tar:
            for member in members:
                target = into / member
                if target.is_file():
                    continue
                try:
                    source = tar.extractfile(member)
                except KeyError:
                    source = None
                if source is None:
                    raise UserError(f"{archive}: has no file {member}")
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with source, open(part, "wb") as f:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        f.write(block)
                os.replace(part, target)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(f"{archive}: cannot extract ({one_line(error)})") from None


def clean(parts: list[tuple[Path, Path]], en_out: Path, de_out: Path) -> dict:
    """The parts' pairs, in order, into two files, less those that training should not
    see; returns the counts: kept, empty, long, ratio."""
    counts = {"kept": 0, "empty": 0, "long": 0, "ratio": 0}
    with open(en_out, "w", encoding="utf-8") as en, open(de_out, "w", encoding="utf-8") as de:
        for en_path, de_path in parts:
            for s, t in stream_parallel(en_path, de_path):
                n, m = len(s.split()), len(t.split())
                reason = ("empty" if not (n and m) else "long" if max(n, m) > MAX_WORDS
                          else "ratio" if max(n, m) > MAX_RATIO * min(n, m) else "kept")
                counts[reason] += 1
                if reason == "kept":
                    en.write(s + "\n")
                    de.write(t + "\n")
    return counts


SEGMENT = re.compile(r"<seg[^>]*>(.*)</seg>", re.IGNORECASE)


def read_sgml(path: Path) -> Iterator[str]:
    """The sentences of a WMT test set in SGML: each <seg>'s text, entities decoded."""
    for line in stream_lines(path):
        match = SEGMENT.search(line)
        if match:
            yield html.unescape(match.group(1)).strip()


def _write_pairs(pairs, en_path: Path, de_path: Path) -> None:
    with open(en_path, "w", encoding="utf-8") as en, open(de_path, "w", encoding="utf-8") as de:
        for s, t in pairs:
            en.write(s + "\n")
            de.write(t + "\n")

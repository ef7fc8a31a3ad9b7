"""Parallel text: two line-aligned files, line i of one translating line i of the other.

    read_lines(path)                  -> list[str]              plain text or gzip (".gz")
    read_parallel(src_path, tgt_path) -> list[(src, tgt)]       same number of lines, in order
    find_multi30k_dir(data_dir)       -> Path                   where the Multi30k files are
    load_multi30k(split, src, tgt)    -> list[(src, tgt)]       e.g. ("val", "en", "de"): 1014 pairs
    download_multi30k(out_dir)        -> list[Path]             the 12 files from their upstream

Files are read as strict UTF-8 and every line is stripped of surrounding whitespace.
Lines end at "\\n" only: `str.splitlines` would also break at characters such as
U+2028 or U+0085 inside a sentence and silently shift one side of a parallel corpus.
Anything wrong with a file raises `UserError` with the path (and line) in one line.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError, one_line

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
MULTI30K_TEST = "test_2016_flickr"  # the test split `evaluate` scores by default
MULTI30K_LANGS = ("en", "de", "fr", "cs")

# Pinned to the commit the checksums below were taken from, so that a later change on
# the upstream branch shows up as a checksum mismatch rather than as different data.
MULTI30K_URL = ("https://raw.githubusercontent.com/multi30k/dataset/"
                "a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/")

# sha256 of each upstream .gz file (see ../shared/data/multi30k/SOURCE.md).
MULTI30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
}

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_MULTI30K = Path("..") / "shared" / "data" / "multi30k"


def _open(path: Path):
    """The file as a binary stream, decompressed when the name ends in .gz."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file")
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or one_line(e)})") from None


def stream_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file (gzip if the name ends in .gz), each stripped, one at a
    time: memory holds one line, whatever the file's size.

    Empty lines in the middle are kept (as "") so that line numbers stay aligned; a
    final newline does not make an extra line; a leading byte-order mark is dropped. A
    file with nothing but white space is an error, said once the end is reached.
    """
    path = Path(path)
    seen_text = False
    with _open(path) as f:
        for number, data in enumerate(_raw_lines(f, path), start=1):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{number}: not valid UTF-8 (byte 0x{data[e.start]:02x}); "
                                f"convert the file to UTF-8") from None
            if number == 1:
                text = text.removeprefix("\ufeff")
            text = text.strip()
            seen_text = seen_text or bool(text)
            yield text
    if not seen_text:
        raise UserError(f"{path}: file is empty")


def _raw_lines(f, path: Path) -> Iterator[bytes]:
    """The file's lines as bytes, split at "\n" only, the final newline not making a line."""
    try:
        for data in f:  # binary files split at b"\n" alone, whatever else a line holds
            yield data[:-1] if data.endswith(b"\n") else data
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        # EOFError: a truncated download; zlib.error: damaged compressed data.
        raise UserError(f"{path}: not a valid gzip file ({one_line(e)})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or one_line(e)})") from None


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a text file at once, as `stream_lines` reads them."""
    return list(stream_lines(path))


def stream_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike
                    ) -> Iterator[tuple[str, str]]:
    """Pairs (source line, target line) of two line-aligned files, in file order, one at a
    time; UserError where the files part (both counts named) once one of them ends early.

    Nothing is dropped or filtered here: a pair with an empty side is the caller's call.
    """
    src, tgt = stream_lines(src_path), stream_lines(tgt_path)
    count = 0
    for pair in itertools.zip_longest(src, tgt):
        if None in pair:  # one file ended: count the rest of the other for the message
            n_src = count + (pair[0] is not None) + sum(1 for _ in src)
            n_tgt = count + (pair[1] is not None) + sum(1 for _ in tgt)
            shorter = src_path if n_src < n_tgt else tgt_path
            raise UserError(
                f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}: parallel files "
                f"must be line-aligned ({shorter} ends before line {count + 1})")
        count += 1
        yield pair


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> list[tuple[str, str]]:
    """All pairs of two line-aligned files at once, as `stream_parallel` reads them."""
    return list(stream_parallel(src_path, tgt_path))


def _holds_multi30k(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in MULTI30K_SHA256)


def _candidates(folder: Path) -> list[Path]:
    """A folder may be the multi30k folder itself or one that contains `multi30k/`."""
    return [folder, folder / "multi30k"]


def find_multi30k_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the Multi30k .gz files.

    An explicit `data_dir` is the only place looked at (a wrong path is reported, not
    silently replaced). Otherwise, in order: $TRANSFORMER_DATA, `../shared/data/multi30k`
    from the repository root, the same from the current directory. Each may name the
    multi30k folder itself or a folder containing `multi30k/`.
    """
    if data_dir is not None:
        places = _candidates(Path(data_dir))
    else:
        places = []
        env = os.environ.get("TRANSFORMER_DATA")
        if env:
            places += _candidates(Path(env))
        places += [REPO_ROOT / SHARED_MULTI30K, Path.cwd() / SHARED_MULTI30K]
    for place in places:
        if _holds_multi30k(place):
            return place
    looked = ", ".join(str(p) for p in places)
    raise UserError(f"Multi30k data not found (looked in: {looked}); set TRANSFORMER_DATA "
                    f"or fetch it with `transformer data multi30k --out DIR`")


def load_multi30k(split: str, src_lang: str, tgt_lang: str,
                  data_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Multi30k Task 1 sentence pairs, e.g. ("train", "en", "de") -> 29000 pairs."""
    return read_parallel(*multi30k_files(split, src_lang, tgt_lang, data_dir))


def multi30k_files(split: str, src_lang: str, tgt_lang: str,
                   data_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The source and target .gz files of a Multi30k split; UserError for an unknown
    split or language, or when the data is not found."""
    if split not in MULTI30K_SPLITS:
        raise UserError(f"split: unknown Multi30k split {split!r}; "
                        f"expected one of {', '.join(MULTI30K_SPLITS)}")
    for key, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        if lang not in MULTI30K_LANGS:
            raise UserError(f"{key}: unknown Multi30k language {lang!r}; "
                            f"expected one of {', '.join(MULTI30K_LANGS)}")
    if src_lang == tgt_lang:
        raise UserError(f"tgt_lang: must differ from src_lang (both are {src_lang!r})")
    folder = find_multi30k_dir(data_dir)
    return folder / f"{split}.{src_lang}.gz", folder / f"{split}.{tgt_lang}.gz"


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks: the one way every download and input is checked."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, out_dir: Path, name: str, expected_sha256: str) -> Path:
    """Download one file to a temporary name in out_dir; rename it into place once verified."""
    target = out_dir / name
    tmp = out_dir / f".{name}.part"  # hidden, and never mistaken for a finished file
    try:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 16), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise UserError(f"{url}: checksum mismatch for {name} (sha256 {digest.hexdigest()}, "
                            f"expected {expected_sha256}); nothing was written")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
        # URLError covers unreachable hosts and HTTP errors (HTTPError is a subclass);
        # OSError covers timeouts, dropped connections and a full disk.
        raise UserError(f"{url}: download of {name} failed ({one_line(e)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def download_multi30k(out_dir: str | os.PathLike, base_url: str = MULTI30K_URL) -> list[Path]:
    """Fetch the 12 Multi30k Task 1 files into out_dir, each verified by its sha256.

    Files already present with the right checksum are kept, so an interrupted download
    can simply be run again. A partial file never appears under its final name.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or one_line(e)
        raise UserError(f"{out_dir}: cannot create the folder ({reason})") from None
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    paths = []
    for name, sha256 in MULTI30K_SHA256.items():
        target = out_dir / name
        if not (target.is_file() and sha256_of(target) == sha256):
            target = _fetch(base_url + name, out_dir, name, sha256)
        paths.append(target)
    return paths

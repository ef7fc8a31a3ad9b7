"""A prepared corpus: a parallel corpus tokenized once and stored as flat arrays of token
ids, which every training process maps from disk (a numpy memmap: the page cache holds
one copy for all of them) instead of each holding the corpus as Python objects.

    prepare_corpus(src, tgt, out, ...)   stream the files once, train the tokenizer on a
                                         bounded sample, encode in batches, write DIR
    PreparedCorpus(DIR)                  read it back: lengths, one pair's ids, the texts

    DIR/manifest.json      format version, counts, the ids' dtype, every input file (size,
                           SHA-256) and every setting that shaped the result
    DIR/tokenizer.json     the joint vocabulary (BPE or unigram); with vocab = "separate",
                           tokenizer.src.json and tokenizer.tgt.json, one for each side
    DIR/train.src.ids      every training source's ids end to end (uint16 while the
    DIR/train.tgt.ids      vocabulary fits in 65,536 ids, else uint32), and for each side
    DIR/train.src.offsets  n + 1 int64 offsets: sentence i is ids[offsets[i]:offsets[i+1]]
    DIR/train.tgt.offsets
    DIR/valid.src          the validation pairs as text, one per line: BLEU scores text, and
    DIR/valid.tgt          the sources are read as every command reads them (sources.py)

Memory while preparing is bounded by the sample the tokenizer learns from and by
`batch_lines` lines in flight, not by the corpus. The folder is written under a hidden
name and renamed into place (checkpoint/atomic.py): a kill, a full disk or a bad line
leaves no half-prepared folder where a run would read it. Preparing the same inputs
with the same settings again does nothing and says so; anything changed is named, and
the folder is prepared again.
"""

from __future__ import annotations

import array
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..checkpoint.atomic import write_folder
from ..errors import UserError, one_line
from .parallel import sha256_of, stream_parallel
from .tokenizer import Tokenizer

FORMAT = 1  # the layout above; a folder of another version is refused
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
VOCAB_CHOICES = ("joint", "separate")  # the `vocab` key
SIDES = ("src", "tgt")
HELD_OUT_MAX = 1000  # without validation files: the last 1% of the pairs, at most this many


def prepare_corpus(src: str | os.PathLike, tgt: str | os.PathLike, out: str | os.PathLike,
                   valid_src: str | None = None, valid_tgt: str | None = None,
                   vocab_size: int = 8000, tokenizer_sample: int = 2_000_000,
                   tokenizer: str = "bpe", vocab: str = "joint", batch_lines: int = 10_000,
                   say: Callable[[str], None] = print) -> Path:
    """Prepare DIR `out` from the line-aligned files `src` and `tgt` (plain or .gz).

    Without validation files, the last 1% of the pairs (at most 1,000, at least one) are
    held out for validation. The tokenizer (`tokenizer`: "bpe" or "unigram") learns from
    at most `tokenizer_sample` training pairs spread evenly over the corpus (every pair
    while the corpus is no larger): one vocabulary of `vocab_size` for both
    sides (`vocab` "joint"), or one of `vocab_size` for each ("separate"). Returns `out`.
    """
    if bool(valid_src) != bool(valid_tgt):
        raise UserError("give both --valid-src and --valid-tgt, or neither")
    inputs = {"src": src, "tgt": tgt, **({"valid_src": valid_src, "valid_tgt": valid_tgt}
                                          if valid_src else {})}
    settings = {"vocab_size": vocab_size, "tokenizer_sample": tokenizer_sample,
                "tokenizer": tokenizer, "vocab": vocab}
    wanted = {"format": FORMAT, "inputs": {k: _fingerprint(v) for k, v in inputs.items()},
              "settings": settings}
    out = Path(out)
    changed = _changes(out, wanted)
    if changed == []:
        say(f"data: {out} is already prepared from these inputs with these settings")
        return out
    if changed:
        say(f"data: {out} was prepared from other {', '.join(changed)}; preparing it again")
    n_pairs = sum(1 for _ in stream_parallel(src, tgt))  # the files checked before any work
    n_train = n_pairs if valid_src else n_pairs - min(HELD_OUT_MAX, max(1, n_pairs // 100))
    if n_train < 1:
        raise UserError(f"{src}: need at least 2 sentence pairs to hold one out for validation")

    def fill(tmp: Path) -> None:
        def sample(sides: tuple[int, ...]) -> Iterator[str]:
            # Every step-th training pair: a corpus made of parts end to end (WMT14:
            # Europarl, then Common Crawl, then News Commentary) is sampled from all of them.
            step = -(-n_train // tokenizer_sample)  # ceil: at most tokenizer_sample pairs
            pairs = itertools.islice(stream_parallel(src, tgt), 0, n_train, step)
            return (pair[k] for pair in pairs for k in sides)

        if vocab == "joint":
            joint = Tokenizer.train(sample((0, 1)), vocab_size, model=tokenizer)
            tokenizers = {"src": joint, "tgt": joint}
        else:
            tokenizers = {side: Tokenizer.train(sample((k,)), vocab_size, model=tokenizer)
                          for k, side in enumerate(SIDES)}
        for side, name in tokenizer_files(vocab).items():
            tokenizers[side].save(tmp / name)
        counts = _write_ids(tmp, tokenizers, stream_parallel(src, tgt), n_train, batch_lines)
        if valid_src:
            counts["valid"] = _write_texts(tmp, stream_parallel(valid_src, valid_tgt))
        sizes = {side: tokenizers[side].vocab_size for side in SIDES}
        manifest = {**wanted, **counts, "vocab_size_reached": sizes,
                    "dtype": _dtype(max(sizes.values())).name}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    try:
        write_folder(out.parent, out.name, fill)
    except OSError as error:  # a full disk, a folder we may not write: nothing is left behind
        raise UserError(f"{out}: cannot write the prepared corpus "
                        f"({error.strerror or one_line(error)})") from None
    say(f"data: prepared {n_train:,} training pairs into {out}")
    return out


def _fingerprint(path: str | os.PathLike) -> dict:
    """{"path", "bytes", "sha256"} of an input file, read in blocks."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _changes(out: Path, wanted: dict) -> list[str] | None:
    """None: nothing prepared at `out` yet; [] the same inputs and settings; else what
    differs ("inputs (src)", "settings (vocab_size)", "format")."""
    try:
        found = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    changed = []
    if found.get("format") != wanted["format"]:
        changed.append("format")
    def content(value):  # an input is the same when its bytes are, wherever it lies
        return value.get("sha256") if isinstance(value, dict) else value

    for section in ("inputs", "settings"):
        old, new = found.get(section) or {}, wanted[section]
        keys = sorted(k for k in set(old) | set(new) if content(old.get(k)) != content(new.get(k)))
        if keys:
            changed.append(f"{section} ({', '.join(keys)})")
    return changed


def tokenizer_files(vocab: str) -> dict[str, str]:
    """The tokenizer file of each side: one shared, or one each."""
    if vocab not in VOCAB_CHOICES:
        raise ValueError(f"vocab={vocab!r}: expected one of {VOCAB_CHOICES}")
    return {side: TOKENIZER if vocab == "joint" else f"tokenizer.{side}.json" for side in SIDES}


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def _write_ids(tmp: Path, tokenizers: dict[str, Tokenizer], pairs: Iterator[tuple[str, str]],
               n_train: int, batch_lines: int) -> dict:
    """Encode the training pairs in batches into the .ids and .offsets files; the pairs
    after the first `n_train` (the held-out ones) go to valid.src and valid.tgt as text."""
    dtype = _dtype(max(tokenizer.vocab_size for tokenizer in tokenizers.values()))
    ends = {side: array.array("q", [0]) for side in SIDES}  # 8 bytes a sentence
    files = {side: open(tmp / f"train.{side}.ids", "wb") for side in SIDES}
    held_out = []  # at most HELD_OUT_MAX pairs: the last ones
    try:
        for start in itertools.count(0, batch_lines):
            batch = list(itertools.islice(pairs, batch_lines))
            if not batch:
                break
            train = batch[: max(0, n_train - start)]
            held_out.extend(batch[len(train):])
            for k, side in enumerate(SIDES):
                encoded = tokenizers[side].encode_batch([pair[k] for pair in train])
                lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
                # One write a batch: the batch's ids end to end, then its sentences' ends.
                np.fromiter(itertools.chain.from_iterable(encoded), dtype=dtype,
                            count=int(lengths.sum())).tofile(files[side])
                ends[side].extend((ends[side][-1] + np.cumsum(lengths)).tolist())
    finally:
        for f in files.values():
            f.close()
    for side in SIDES:
        np.frombuffer(ends[side], dtype=np.int64).tofile(tmp / f"train.{side}.offsets")
    counts = {"train": n_train, "tokens": {side: ends[side][-1] for side in SIDES}}
    if held_out:
        counts["valid"] = _write_texts(tmp, held_out)
    return counts


def _write_texts(tmp: Path, pairs: Iterator[tuple[str, str]]) -> int:
    """valid.src and valid.tgt, one sentence a line; returns how many pairs."""
    n = 0
    with open(tmp / "valid.src", "w", encoding="utf-8") as src, \
            open(tmp / "valid.tgt", "w", encoding="utf-8") as tgt:
        for s, t in pairs:
            src.write(s + "\n")
            tgt.write(t + "\n")
            n += 1
    return n


class PreparedCorpus:
    """A prepared folder, read: its tokenizer, the training ids (memory-mapped), the
    validation texts. UserError when the folder is not one, or of another version."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{self.folder}: not a prepared corpus (no readable {MANIFEST}; "
                            "make one with `transformer data prepare`)") from None
        if self.manifest.get("format") != FORMAT:
            raise UserError(f"{self.folder}: prepared in format {self.manifest.get('format')!r}, "
                            f"this version reads format {FORMAT}; prepare it again")
        vocab = (self.manifest.get("settings") or {}).get("vocab", "joint")
        loaded = {name: Tokenizer.load(self.folder / name)
                  for name in set(tokenizer_files(vocab).values())}
        # One object for both sides when the vocabulary is joint.
        self.tokenizer_files = tokenizer_files(vocab)
        self.tokenizers = {side: loaded[name] for side, name in self.tokenizer_files.items()}
        dtype = np.dtype(self.manifest["dtype"])
        self.ids = {side: np.memmap(self.folder / f"train.{side}.ids", dtype=dtype, mode="r")
                    if self.manifest["tokens"][side] else np.zeros(0, dtype) for side in SIDES}
        self.offsets = {side: np.memmap(self.folder / f"train.{side}.offsets", dtype=np.int64,
                                        mode="r") for side in SIDES}

    def __len__(self) -> int:
        return len(self.offsets["src"]) - 1

    def lengths(self) -> np.ndarray:
        """(n, 2) int64: the source and target token counts of every training pair."""
        return np.stack([np.diff(self.offsets[side]) for side in SIDES], axis=1)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of training pair i, source and target (views of the memory map)."""
        return tuple(self.ids[side][self.offsets[side][i]: self.offsets[side][i + 1]]
                     for side in SIDES)

    def valid_pairs(self) -> list[tuple[str, str]]:
        """The validation pairs as text."""
        return list(stream_parallel(self.folder / "valid.src", self.folder / "valid.tgt"))

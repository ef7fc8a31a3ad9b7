"""What the translation server answers, apart from HTTP: requests checked, models kept.

`TranslationService(run_dir)` loads a run once and answers two questions:

    translate(body: dict) -> dict   body {"text": str} or {"texts": [str]}, optional
                                    "beam", "n_best", "attention", "checkpoint";
                                    answer: analyze.py's dict + "checkpoint" (the folder
                                    name used) + "ms" (the time of the batched call that
                                    decoded this text, its wait not counted) + "batch"
                                    (how many texts that call decoded), or
                                    {"results": [one such dict per text]}
    info() -> dict                  the model, its checkpoints, languages, validation BLEU

A synthetic run (copy, reverse, sort) is asked and answers in its symbols: "3 7 1", each
number a token (data/symbols.py).

A request names a checkpoint folder of the run ("step-000400", "best"): its model is
loaded on first use and the last few stay loaded (least recently used goes first), so an
explorer sliding through training steps does not reload at every move. A folder rewritten
since it was loaded ("best" during training) is loaded again.

Every mistake in a request is a UserError with one line saying what to send instead
(handler.py answers it with 400), found in the request's own thread. The texts then go to
the model worker (batcher.py), the one thread that touches models: it decodes the texts of
many requests that ask the same (checkpoint, beam, n_best) in one batched call, which is
where a server under load gets its throughput. Recording attention sets flags on modules,
so a text with "attention" is decoded alone. An answer does not depend on the company its
text had: beam search searches each sentence on its own rows; only float rounding in
differently padded batches can differ, which moves a score in its last digits and could
swap two hypotheses whose scores tie to those digits.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ..checkpoint.catalogue import all_checkpoints, checkpoint_steps, pick_checkpoint
from ..checkpoint.format import WEIGHTS_FILE, weights_file
from ..data.symbols import SymbolVocabulary
from ..decoding.analyze import analyze_sources, encode_source
from ..decoding.translate import DEFAULT_BEAM
from ..errors import UserError
from ..run.rundir import bleu_history, load_run
from .batcher import Batcher, Job

REQUEST_FIELDS = ("text", "texts", "beam", "n_best", "attention", "checkpoint")
MAX_BEAM = 16  # every beam costs a decoder row per step: a bound on one request's work
MAX_TEXTS = 64  # sentences in one batch request, for the same reason
MAX_BEAM_ROWS = 256  # texts x beam: the decoder rows one request may keep busy
MAX_LOADED = 4  # checkpoints kept in memory at once
REQUEST_DEADLINE = 120  # seconds a request may wait for its translation, its turn included


@dataclasses.dataclass
class TranslateRequest:
    texts: list[str]
    batch: bool  # given as "texts": answer {"results": [...]}
    beam: int
    n_best: int
    attention: bool
    checkpoint: str | None


def parse_request(body) -> TranslateRequest:
    """A translate request's JSON body, checked; UserError naming the first bad field."""
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise UserError(f"unknown field {unknown[0]!r}; the fields are {', '.join(REQUEST_FIELDS)}")
    if ("text" in body) == ("texts" in body):
        raise UserError('give "text" (a string) or "texts" (a list of strings), one of the two')
    batch = "texts" in body
    texts = body["texts"] if batch else [body["text"]]
    if batch and (not isinstance(texts, list) or not 1 <= len(texts) <= MAX_TEXTS):
        raise UserError(f'"texts" must be a list of 1 to {MAX_TEXTS} strings')
    if not all(isinstance(text, str) for text in texts):
        raise UserError('"texts" must hold strings only' if batch else '"text" must be a string')
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is no character
            where = f'"texts"[{i}]' if batch else '"text"'
            raise UserError(f"{where} holds a lone surrogate, which is not text") from None
    beam = _integer(body, "beam", DEFAULT_BEAM, MAX_BEAM, "")
    n_best = _integer(body, "n_best", 1, beam, f" (the beam size {beam})")
    attention = _optional(body, "attention", False)
    if not isinstance(attention, bool):
        raise UserError(f'"attention" must be true or false, got {attention!r}')
    if attention and len(texts) > 1:
        # L x H x (S^2 + T^2 + T x S) weights a text: one text's maps per answer at most
        raise UserError('"attention" is for one text per request; send the texts one by one')
    if len(texts) * beam > MAX_BEAM_ROWS:
        raise UserError(f"{len(texts)} texts x beam {beam} = {len(texts) * beam} beam rows; "
                        f"the limit is {MAX_BEAM_ROWS} (fewer texts, or a smaller beam)")
    checkpoint = _optional(body, "checkpoint", None)
    if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint):
        raise UserError(f'"checkpoint" must be a checkpoint folder name, got {checkpoint!r}')
    return TranslateRequest(texts, batch, beam, n_best, attention, checkpoint)


def _optional(body: dict, name: str, default):
    value = body.get(name)
    return default if value is None else value  # null means "the default", as if left out


def _integer(body: dict, name: str, default: int, largest: int, why: str) -> int:
    value = _optional(body, name, default)
    # bool is an int in Python, but `true` is not a beam size.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= largest:
        raise UserError(f'"{name}" must be an integer from 1 to {largest}{why}, got {value!r}')
    return value


class TranslationService:
    """One run's models and vocabulary; see the module docstring."""

    def __init__(self, run_dir: str | Path, checkpoint: str | None = None,
                 device: str = "cpu") -> None:
        self.run_dir = Path(run_dir)
        self.device = device
        if not self.run_dir.is_dir():  # said before "no checkpoint found in ...": clearer
            raise UserError(f"{self.run_dir}: no such run directory")
        self.default = pick_checkpoint(self.run_dir, checkpoint)
        run = load_run(self.run_dir, self.default, device)
        self.source, self.target, self.settings = run.source, run.target, run.settings
        self.symbols = self.source.num_symbols if isinstance(self.source, SymbolVocabulary) else None
        self.parameters = run.model.num_parameters()
        self.max_len = run.model.cfg.max_len
        self.lock = threading.Lock()  # the catalogue: which folder a name means now
        self.loaded: OrderedDict[tuple[str, int], object] = OrderedDict()  # the worker's alone
        self.loaded[self._key(self.default.name, self.default)] = run.model
        self.batcher = Batcher(self._decode)

    def translate(self, body, gone: Callable[[], bool] = lambda: False) -> dict:
        """The answer to one request's body. Its texts are checked here, then decoded by the
        model worker together with other requests' (batcher.py); `gone()` says whether the
        client is still waiting. Busy when the queue is full or the deadline passes."""
        request = parse_request(body)
        with self.lock:
            name, path = self._checkpoint(request.checkpoint)
            weights = self._key(name, path)
        sources = []
        for i, text in enumerate(request.texts):  # every text checked before any work
            try:
                sources.append(encode_source(self.source, text, self.max_len))
            except UserError as error:
                raise UserError(f"texts[{i}]: {error}" if request.batch else str(error)) from None
        # Texts decode together when they ask the same of the same weights; attention maps
        # are recorded for one text at a time, so such a text gets a key of its own.
        alone = object() if request.attention else None
        key = (*weights, path, request.beam, request.n_best, alone)
        jobs = [Job(key, source, rows=request.beam) for source in sources]
        self.batcher.submit(jobs)
        answers = self.batcher.wait(jobs, time.monotonic() + REQUEST_DEADLINE, gone)
        for answer in answers:
            answer["checkpoint"] = name
        return {"results": answers} if request.batch else answers[0]

    def _decode(self, key, jobs: list[Job]) -> list[dict]:
        """One group of texts in one batched call (in the model worker's thread)."""
        name, _, path, beam, n_best, attention = key
        model = self._model(name, path)
        start = time.perf_counter()
        answers = analyze_sources(model, self.source, [job.source for job in jobs],
                                  self.settings.train.decoding, beam=beam, n_best=n_best,
                                  attention=attention is not None, target=self.target)
        ms = round((time.perf_counter() - start) * 1000, 1)
        for answer in answers:
            answer["ms"], answer["batch"] = ms, len(jobs)
        return answers

    def close(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the translation in progress; refuse any later one.

        The server's threads are daemons, left running at exit: one still inside torch
        then would abort the interpreter ("terminate called without an active exception").
        """
        self.batcher.close(timeout)

    def info(self) -> dict:
        train = self.settings.train
        bleu_steps, bleus = bleu_history(self.run_dir)
        return {
            "run": str(self.run_dir),
            "task": train.task,
            # "en-de" for a translation run; for a synthetic one the task says what it does
            "languages": f"{train.src_lang}-{train.tgt_lang}" if self.symbols is None else train.task,
            "model": self.settings.to_json()["model"],
            "parameters": self.parameters,
            "max_len": self.max_len,
            "checkpoint": self.default.name,
            "step": _step(self.default),
            "checkpoints": [{"name": name, "step": _step(path)}
                            for name, path in self.checkpoints().items()],
            "valid_bleu": bleus[-1] if bleus else None,  # of the last evaluation with BLEU
            "valid_bleu_step": bleu_steps[-1] if bleu_steps else None,
            # a synthetic run's number of symbols (its input is the numbers 0 to symbols - 1);
            # None for a translation run, which reads text
            "symbols": self.symbols,
            "max_beam": MAX_BEAM,
        }

    def checkpoints(self) -> dict[str, Path]:
        """The complete checkpoint folders by name: step-* by step, then the named ones."""
        found = all_checkpoints(self.run_dir)
        found.setdefault(self.default.name, self.default)  # --checkpoint from elsewhere
        return found

    def _checkpoint(self, name: str | None) -> tuple[str, Path]:
        """(name, folder) of a checkpoint of the run, the default when None; under the lock."""
        folders = self.checkpoints()
        if name is None and not (self.default / WEIGHTS_FILE).is_file():
            # The default is gone (keep_last at work in a run still training): the
            # catalogue picks again, as a new server would.
            self.default = pick_checkpoint(self.run_dir)
            folders = self.checkpoints()
        name = self.default.name if name is None else name
        path = self.default if name == self.default.name else folders.get(name)
        if path is None:
            raise UserError(f"unknown checkpoint {name!r}; this run has: {', '.join(folders)}")
        return name, path

    def _model(self, name: str, path: Path):
        """The model of a checkpoint folder, loaded on first use (the model worker's alone)."""
        key = self._key(name, path)
        if key not in self.loaded:
            self.loaded[key] = load_run(self.run_dir, path, self.device).model
            while len(self.loaded) > MAX_LOADED:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(key)
        return self.loaded[key]

    @staticmethod
    def _key(name: str, path: Path) -> tuple[str, int]:
        """A loaded model's key: its name and when its weights were written."""
        try:
            return name, weights_file(path).stat().st_mtime_ns
        except OSError:  # deleted since it was listed (keep_last at work)
            raise UserError(f"checkpoint {name!r} is gone") from None


def _step(path: Path) -> int | None:
    """The last training step a checkpoint's weights cover, None if it does not say."""
    try:
        steps = checkpoint_steps(path)
    except UserError:  # unreadable: listed all the same, without a step
        return None
    return steps[1] if steps is not None else None

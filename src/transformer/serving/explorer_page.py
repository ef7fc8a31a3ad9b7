"""The attention explorer as one offline HTML file: a sentence, its translation, every map.

    explore(RUN_DIR, "A dog runs.", "explorer.html")     (a copy run: "3 7 1 12", its symbols)

translates the sentence with each checkpoint of the run (checkpoints="all": every
`step-*` folder, oldest first, then the named ones such as `best` and `averaged`, as the
server lists them; "chosen": the one commands use by default) and writes one page: the
explorer of `explorer/` (the same page `transformer serve` shows at /) with its stylesheet,
its scripts and the answers inlined. The page's checkpoint slider steps through the
answers, showing how attention formed during training. `compare=OTHER_RUN` adds a second
column, e.g. the "mask-after-softmax" run of `transformer ablate` beside its baseline.

The file asks nothing from any host: it can be mailed, opened offline, kept with a paper.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from ..errors import UserError
from .service import TranslationService

CHECKPOINT_CHOICES = ("all", "chosen")
# How index.html names its assets, and where the offline data goes (see index.html).
STYLESHEET = re.compile(r'<link rel="stylesheet" href="static/([\w.-]+)">')
SCRIPT = re.compile(r'<script src="static/([\w.-]+)"></script>')
DATA_MARKER = "<!-- window.EXPLORER_DATA (offline file only) -->"


# --- the page --------------------------------------------------------------------------

def explorer_file(name: str) -> str:
    """The text of one file of the explorer's folder (package data)."""
    return resources.files(__package__).joinpath("explorer", name).read_text(encoding="utf-8")


def render_page(data: dict) -> str:
    """index.html with its stylesheet, scripts and `window.EXPLORER_DATA = data` inlined.

    `data` is {"info": {...}, "results": [{"label", "checkpoint", "result"}], "compare":
    [...] or None} (plus "text", the sentence), each "result" an answer of analyze().
    """
    page = explorer_file("index.html")
    page = STYLESHEET.sub(lambda m: f"<style>\n{_inline(m.group(1), '</style')}</style>", page)
    page = SCRIPT.sub(lambda m: f"<script>\n{_inline(m.group(1), '</script')}</script>", page)
    if DATA_MARKER not in page:
        raise RuntimeError("index.html lost its data marker: the offline page would hold no data")
    return page.replace(DATA_MARKER, f"<script>window.EXPLORER_DATA = {script_json(data)};</script>")


def _inline(name: str, closing_tag: str) -> str:
    text = explorer_file(name)
    if closing_tag in text.lower():  # it would end the element it is inlined into
        raise RuntimeError(f"explorer/{name} contains {closing_tag}: it cannot be inlined")
    return text


def script_json(data) -> str:
    """`data` as JSON that is safe inside a <script> element.

    "<", ">" and "&" become \\u003c, \\u003e, \\u0026 (they only occur inside JSON strings,
    where the escape means the same character), so a sentence holding "</script>" or
    "<!--" cannot end or bend the script. Non-ASCII is escaped too (json's default),
    U+2028 and U+2029 among it. NaN and infinity are refused: they are not JSON.
    """
    text = json.dumps(data, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- the data --------------------------------------------------------------------------

def explore(run_dir: str | Path, sentence: str, out: str | Path, compare: str | Path | None = None,
            checkpoints: str = "all", beam: int = 4, device: str = "cpu", n_best: int = 3) -> Path:
    """Translate `sentence` with the run's checkpoints (and `compare`'s), write the page to `out`.

    The answers are the server's own: a TranslationService asked as /api/translate is,
    so the page shows what `transformer serve` would, and each checkpoint is loaded once.
    """
    if checkpoints not in CHECKPOINT_CHOICES:
        raise UserError(f"checkpoints={checkpoints!r} must be one of {', '.join(CHECKPOINT_CHOICES)}")
    service = TranslationService(run_dir, device=device)
    names = list(service.checkpoints()) if checkpoints == "all" else [service.default.name]
    data = {"text": sentence, "info": service.info(), "compare": None,
            "results": [explain(service, name, sentence, beam, n_best) for name in names]}
    if compare is not None:
        other = TranslationService(compare, device=device)
        data["compare"] = [explain(other, other.default.name, sentence, beam, n_best)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(data), encoding="utf-8")
    return out


def explain(service: TranslationService, checkpoint: str, sentence: str, beam: int,
            n_best: int) -> dict:
    """{"label", "checkpoint", "result"}: one checkpoint's answer, with its attention."""
    result = service.translate({"text": sentence, "checkpoint": checkpoint, "beam": beam,
                                "n_best": min(n_best, beam), "attention": True})
    result.pop("ms", None)  # a page is kept: the time of one machine's run means nothing there
    return {"label": f"{service.run_dir.name} \u00b7 {checkpoint}", "checkpoint": checkpoint,
            "result": result}

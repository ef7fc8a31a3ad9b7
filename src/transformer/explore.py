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

from .ablate import VARIANTS, with_attention
from .analyze import analyze, tokenizer_vocabulary
from .errors import UserError
from .rundir import decoding_settings, load_run, pick_checkpoint
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
    """Translate `sentence` with the run's checkpoints (and `compare`'s), write the page to `out`."""
    if checkpoints not in CHECKPOINT_CHOICES:
        raise UserError(f"checkpoints={checkpoints!r} must be one of {', '.join(CHECKPOINT_CHOICES)}")
    run_dir = Path(run_dir)
    service = TranslationService(run_dir, device=device)  # the server's /api/info, and its order
    folders = service.checkpoints() if checkpoints == "all" else {service.default.name: service.default}
    data = {"text": sentence, "info": service.info(), "compare": None,
            "results": [explain(run_dir, path, sentence, beam, n_best, device)
                        for path in folders.values()]}
    if compare is not None:
        other = Path(compare)
        data["compare"] = [explain(other, pick_checkpoint(other), sentence, beam, n_best, device)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(data), encoding="utf-8")
    return out


def explain(run_dir: Path, checkpoint: Path, sentence: str, beam: int, n_best: int,
            device: str) -> dict:
    """{"label", "checkpoint", "result"}: one checkpoint's answer, decoded as the run's
    own evaluations were (its length penalty and length limit)."""
    model, tokenizer, saved = load_run(run_dir, checkpoint=str(checkpoint), device=device)
    restore_ablation(model, saved)
    result = analyze(model, tokenizer_vocabulary(tokenizer), sentence, beam=beam,
                     n_best=min(n_best, beam), attention=True, **decoding_settings(saved))
    result["checkpoint"] = checkpoint.name
    return {"label": f"{run_dir.name} \u00b7 {checkpoint.name}", "checkpoint": checkpoint.name,
            "result": result}


def restore_ablation(model, saved: dict) -> None:
    """Give an ablation variant's model back the wrong attention it was trained with.

    config.json cannot name a function, so a model built from it attends correctly;
    its "ablation" section says which variant it was (ablate.py).
    """
    name = (saved.get("ablation") or {}).get("variant")
    for variant in VARIANTS:
        if variant.name == name and variant.attention is not None:
            with_attention(model, variant.attention)

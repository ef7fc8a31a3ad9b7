"""The explorer in a real browser: headless Chromium renders the page, the tests read the DOM.

The offline file (explore.py) is opened from disk with every host name unresolvable, and
Chromium's network log shows that the page itself asks for nothing; the served page
(serve.py, on 127.0.0.1) asks its own server only. Screenshots are kept
in the pytest tmp dir and copied to test-artifacts/ (git-ignored) for a person to look at.
Every test skips, with the reason, where /usr/bin/chromium is not installed.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import pytest

from transformer.serving import handler as served
from transformer.serving.explorer_page import explore, render_page

from explorer_helpers import (
    Dom,
    ablated_copy,
    chromium,
    embedded_data,
    expected_panels,
    page_requests,
    panels,
)
from serve_helpers import Server

SENTENCE = "the cat finds the ball ."
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def pages(trained_translation_run, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{"single": every checkpoint of the run, "compare": baseline beside mask-after-softmax},
    each (the HTML file, the data it holds)."""
    run = trained_translation_run
    folder = tmp_path_factory.mktemp("explorer-pages")
    ablated = ablated_copy(run, folder)
    single = explore(run, SENTENCE, folder / "single.html", beam=3)
    compare = explore(run, SENTENCE, folder / "compare.html", compare=ablated, checkpoints="chosen")
    return {name: (path, embedded_data(path.read_text(encoding="utf-8"))) for name, path in
            (("single", single), ("compare", compare))}


def render(page: Path, tmp_path: Path) -> tuple[Dom, list[str]]:
    """(the DOM Chromium built from `page`, the URLs the page requested)."""
    netlog = tmp_path / "netlog.json"
    html = chromium(tmp_path, f"--log-net-log={netlog}", "--dump-dom", page.as_uri())
    return Dom(html), page_requests(netlog)


def test_offline_page_renders_the_last_checkpoint(pages, tmp_path):
    path, data = pages["single"]
    dom, requests = render(path, tmp_path)
    assert requests == []
    assert dom.body().get("data-state") == "ready"
    result = data["results"][-1]["result"]  # the slider starts at the end of training
    assert dom.text["translation"] == result["translation"]
    found = panels(dom)
    assert len(found) == len(set(found)) and set(found) == expected_panels(result)
    assert len(found) == 3 * 1 * 2  # kinds x layers x heads of the tiny model
    assert len(dom.find("hypothesis")) == len(result["hypotheses"])
    assert len(dom.find("token-chip")) == len(result["target_tokens"])
    assert dom.by_id("checkpoint-slider")["max"] == str(len(data["results"]) - 1)
    assert "hidden" not in dom.by_id("checkpoint-control")  # several checkpoints: a slider
    assert "error" not in dom.text or not dom.text["error"].strip()


def test_offline_compare_page_shows_both_columns(pages, tmp_path):
    path, data = pages["compare"]
    dom, requests = render(path, tmp_path)
    assert requests == []
    assert dom.body().get("data-state") == "ready"
    assert dom.text["translation"] == data["results"][0]["result"]["translation"]
    assert set(panels(dom, "main")) == expected_panels(data["results"][0]["result"])
    assert set(panels(dom, "compare")) == expected_panels(data["compare"][0]["result"])
    assert len(panels(dom)) == 2 * 3 * 2
    # Weights masked after the softmax: the decoder's rows no longer sum to 1, and say so.
    assert dom.find("leak")


def test_network_log_sees_a_page_request(tmp_path):
    """The check above is not vacuous: a page that loads an image from a host is caught."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><img src="http://example.com/x.png">', encoding="utf-8")
    _, requests = render(page, tmp_path)
    assert requests == ["http://example.com/x.png"]


# Clicks and hovers as a person would make them, run in the page once it has rendered;
# what they changed is left in body[data-check] for the test to read from the dumped DOM.
INTERACTIONS = """<script>
const seen = {};
document.querySelector('.head-panel[data-kind="encoder"][data-layer="0"][data-head="1"]').click();
seen.title = document.getElementById("zoom-title").textContent;
seen.selected = document.querySelectorAll(".head-panel.selected").length;
const cell = document.querySelector('.zoom-grid .cell[data-row="1"][data-col="2"]');
cell.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
seen.lit = document.querySelectorAll(".zoom-grid .lit").length;
seen.readout = document.querySelector(".zoom-readout").textContent;
const chip = document.querySelector(".token-chip");
chip.click();
seen.alternatives = getComputedStyle(chip.querySelector(".alternatives")).display;
const slider = document.getElementById("checkpoint-slider");
slider.value = 0;
slider.dispatchEvent(new Event("input"));
seen.translation = document.getElementById("translation").textContent;
seen.label = document.getElementById("checkpoint-label").textContent;
seen.titleAfter = document.getElementById("zoom-title").textContent;
document.body.dataset.check = JSON.stringify(seen);
</script>
</body>"""


def checked(html: str, script: str, page: Path, tmp_path: Path) -> tuple:
    """(the dom, what `script` left in body's data-check) of `html` with `script` at its
    end, written to `page` and rendered."""
    page.write_text(html.replace("</body>", script), encoding="utf-8")
    dom, _ = render(page, tmp_path)
    return dom, json.loads(dom.body()["data-check"])


def test_offline_page_answers_clicks_and_hovers(pages, tmp_path):
    path, data = pages["single"]
    _, seen = checked(path.read_text(encoding="utf-8"), INTERACTIONS, tmp_path / "clicked.html",
                      tmp_path)
    assert seen["title"] == "Encoder self-attention \u00b7 layer 1 \u00b7 head 2"
    assert seen["selected"] == 1
    S = len(data["results"][0]["result"]["source_tokens"])
    assert seen["lit"] == (S + S - 1) + 2  # the cell's row and column, and their two labels
    weight = data["results"][-1]["result"]["attention"]["encoder"][0][1][1][2]
    assert seen["readout"].endswith(f"{weight:.3f}")
    assert seen["alternatives"] == "block"  # a clicked token shows what the model weighed
    first = data["results"][0]
    assert seen["translation"] == first["result"]["translation"]
    assert seen["label"] == f"{first['checkpoint']} (step 20)"
    assert seen["titleAfter"] == seen["title"]  # the zoomed head stays through the slider


# Hovers in the zoom of an encoder head, noting every element whose classes were read or
# written meanwhile (the classList and className properties, setAttribute): what each
# hover touched, and what it left lit, as "row,col" ("-" where a label has none).
HOVERS = """<script>
(() => {
  const touched = new Set();
  const watch = (name, keep) => {
    const real = Object.getOwnPropertyDescriptor(Element.prototype, name);
    Object.defineProperty(Element.prototype, name, {...real, ...keep(real)});
  };
  watch("classList", real => ({get() { touched.add(this); return real.get.call(this); }}));
  watch("className", real => ({set(value) { touched.add(this); real.set.call(this, value); }}));
  watch("setAttribute", real => ({value(...args) {
    touched.add(this);
    return real.value.apply(this, args);
  }}));
  document.querySelector('.head-panel[data-kind="encoder"][data-layer="0"][data-head="0"]').click();
  const grid = document.querySelector(".zoom-grid");
  const name = node => `${node.dataset.row ?? "-"},${node.dataset.col ?? "-"}`;
  const step = (node, event) => {
    touched.clear();
    node.dispatchEvent(new MouseEvent(event, {bubbles: event === "mouseover"}));
    const changed = [...touched].filter(other => other !== grid && grid.contains(other));
    return {touched: changed.map(name), lit: [...grid.querySelectorAll(".lit")].map(name),
            hovering: grid.classList.contains("hovering")};
  };
  const cell = (row, col) => grid.querySelector(`.cell[data-row="${row}"][data-col="${col}"]`);
  const seen = {
    first: step(cell(1, 2), "mouseover"),
    second: step(cell(3, 0), "mouseover"),
    label: step(grid.querySelector('.row-label[data-row="2"]'), "mouseover"),
    left: step(grid, "mouseleave"),
  };
  document.body.dataset.check = JSON.stringify(seen);
})();
</script>
</body>"""


def test_zoom_hover_touches_the_lit_row_and_column_only(pages, tmp_path):
    path, data = pages["single"]
    _, seen = checked(path.read_text(encoding="utf-8"), HOVERS, tmp_path / "hovered.html",
                      tmp_path)
    S = len(data["results"][-1]["result"]["source_tokens"])
    assert S > 3  # rows and columns 0 to 3 exist

    def line(row=None, col=None) -> set[str]:
        """The names of a row's label and cells, and of a column's."""
        names = set()
        if row is not None:
            names |= {f"{row},-"} | {f"{row},{j}" for j in range(S)}
        if col is not None:
            names |= {f"-,{col}"} | {f"{i},{col}" for i in range(S)}
        return names

    first, second, label, left = seen["first"], seen["second"], seen["label"], seen["left"]
    assert set(first["lit"]) == line(1, 2) and len(first["lit"]) == len(line(1, 2))
    assert set(second["lit"]) == line(3, 0)  # the old row and column went dark
    assert set(label["lit"]) == line(row=2)  # a row label lights its row alone
    assert left["lit"] == [] and not left["hovering"] and first["hovering"]
    # Each move touched the lines it lit or put out, not the whole grid.
    assert first["touched"] and set(first["touched"]) <= line(1, 2)
    assert set(second["touched"]) <= line(1, 2) | line(3, 0)
    assert set(label["touched"]) <= line(3, 0) | line(row=2)
    assert set(left["touched"]) <= line(row=2)


def without_attention(data: dict) -> dict:
    """`data` as explore() would write it for answers asked for without attention."""
    data = json.loads(json.dumps(data))
    for entry in data["results"]:
        entry["result"].pop("attention")
    return data


# A resize, with the page's uncaught errors kept in body[data-check].
RESIZE = """<script>
(() => {
  const errors = [];
  addEventListener("error", event => errors.push(event.message));
  dispatchEvent(new Event("resize"));
  document.body.dataset.check = JSON.stringify({errors, state: document.body.dataset.state});
})();
</script>
</body>"""


def test_offline_page_without_attention_survives_a_resize(pages, tmp_path):
    html = render_page(without_attention(pages["single"][1]))
    dom, seen = checked(html, RESIZE, tmp_path / "no-attention.html", tmp_path)
    assert seen == {"errors": [], "state": "ready"}
    assert not panels(dom) and dom.text["translation"]


def test_offline_page_takes_the_beams_bound_from_its_info(pages, tmp_path):
    data = json.loads(json.dumps(pages["single"][1]))
    data["info"]["max_beam"] = 7  # not the server's 16: the page must read it, not know it
    page = tmp_path / "max-beam.html"
    page.write_text(render_page(data), encoding="utf-8")
    dom, _ = render(page, tmp_path)
    assert dom.by_id("beam")["max"] == dom.by_id("n-best")["max"] == "7"


@pytest.mark.parametrize("name", ["single", "compare"])
def test_screenshot(pages, tmp_path, name):
    path, _ = pages[name]
    png = tmp_path / f"explorer-{name}.png"
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,1800", path.as_uri())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(png, ARTIFACTS / ("explorer.png" if name == "single" else png.name))


# --- the page served by `transformer serve` ------------------------------------------------

@pytest.fixture(scope="module")
def server(trained_translation_run):
    running = Server(trained_translation_run)
    yield running
    running.stop()


def open_served(server: Server, query: dict, tmp_path: Path) -> tuple[Dom, list[str]]:
    """(the DOM Chromium built from the served page at ?QUERY, the URLs the page requested)."""
    netlog = tmp_path / "netlog.json"
    url = f"{server.base}/?{urllib.parse.urlencode(query)}"
    html = chromium(tmp_path, f"--log-net-log={netlog}", "--dump-dom", url, loopback=True)
    return Dom(html), page_requests(netlog)


def test_served_page_translates_the_text_of_its_url(server, tmp_path):
    dom, requests = open_served(server, {"text": SENTENCE, "beam": 3, "n_best": 2}, tmp_path)
    answer = server.translate({"text": SENTENCE, "beam": 3, "n_best": 2, "attention": True})
    assert dom.body().get("data-state") == "ready"
    assert dom.text["translation"] == answer["translation"]
    found = panels(dom)
    assert len(found) == len(set(found)) and set(found) == expected_panels(answer)
    assert len(dom.find("hypothesis")) == 2
    assert len(dom.find("token-chip")) == len(answer["target_tokens"])
    assert "hidden" not in dom.by_id("checkpoint-control")  # the run has three checkpoints
    assert requests and all(url.startswith(server.base + "/") for url in requests), requests


def test_served_page_shows_the_servers_error(server, tmp_path):
    too_long = " ".join(["the cat"] * 40)  # past the model's max_len of 32 tokens
    status, _, answer = server.request("/api/translate", {"text": too_long, "attention": True})
    assert 400 <= status < 500
    dom, _ = open_served(server, {"text": too_long}, tmp_path)
    assert dom.body().get("data-state") == "error"
    assert dom.text["error"] == answer["error"]
    assert not panels(dom)


# Typing, Enter, the checkpoint slider and a bad request, on the served page; what each
# step showed is left in body[data-check].
ONLINE_STEPS = """<script>
(async () => {
  const until = test => new Promise(done => {
    const timer = setInterval(() => { if (test()) { clearInterval(timer); done(); } }, 20);
  });
  const $ = id => document.getElementById(id), seen = {};
  const shown = () => ({translation: $("translation").textContent, url: location.search,
                        meta: document.querySelector(".meta").textContent,
                        slider: $("checkpoint-label").textContent});
  await until(() => document.body.dataset.state === "ready");
  seen.loaded = shown();
  $("source-text").value = "a dog sees the ball .";
  $("source-text").dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
  await until(() => document.body.dataset.state === "ready");  // Enter made it "loading"
  seen.entered = shown();
  const slider = $("checkpoint-slider");
  slider.value = slider.max;
  slider.dispatchEvent(new Event("input"));
  slider.dispatchEvent(new Event("change"));
  await until(() => document.body.dataset.state === "ready");
  seen.slid = shown();
  $("source-text").value = Array(40).fill("the cat").join(" ");
  $("translate-button").click();
  await until(() => document.body.dataset.state === "error");
  seen.error = $("error").textContent;
  document.body.dataset.check = JSON.stringify(seen);
})();
</script>
</body>"""


def serve_changed_page(monkeypatch, tmp_path: Path, end: str, start: str = "") -> None:
    """Make the running server's page a copy of index.html with the script `end` before
    </body> and `start` (if any) before the explorer's own scripts."""
    pages = tmp_path / "explorer"
    shutil.copytree(served.EXPLORER_DIR, pages)
    index = pages / "index.html"
    html = index.read_text(encoding="utf-8").replace("</body>", end)
    first = '<script src="static/dom.js"></script>'
    assert first in html
    index.write_text(html.replace(first, start + first), encoding="utf-8")
    monkeypatch.setattr(served, "EXPLORER_DIR", pages)  # the running server reads it per request


def test_served_page_follows_enter_and_the_slider(server, tmp_path, monkeypatch):
    serve_changed_page(monkeypatch, tmp_path, ONLINE_STEPS)
    dom, _ = open_served(server, {"text": SENTENCE, "beam": 2, "n_best": 2,
                                  "checkpoint": "step-000020"}, tmp_path)
    seen = json.loads(dom.body()["data-check"])

    def translation(text: str, checkpoint: str) -> str:
        body = {"text": text, "beam": 2, "n_best": 2, "checkpoint": checkpoint}
        return server.translate(body)["translation"]

    loaded, entered, slid = seen["loaded"], seen["entered"], seen["slid"]
    assert loaded["slider"] == "step-000020 (step 20)" and loaded["meta"].endswith("step-000020")
    assert loaded["translation"] == translation(SENTENCE, "step-000020")
    assert entered["translation"] == translation("a dog sees the ball .", "step-000020")
    assert entered["url"] == "?text=a+dog+sees+the+ball+.&beam=2&n_best=2&checkpoint=step-000020"
    assert slid["slider"].startswith("best") and slid["meta"].endswith("best")
    assert slid["translation"] == translation("a dog sees the ball .", "best")
    assert slid["url"].endswith("&checkpoint=best")
    assert "longer than the model's limit" in seen["error"]


# Before the explorer's scripts: every request leaves with attention off (as a caller of
# /api/translate may ask), and the page's uncaught errors are kept.
ATTENTION_OFF = """<script>
(() => {
  window.pageErrors = [];
  addEventListener("error", event => pageErrors.push(event.message));
  addEventListener("unhandledrejection", event => pageErrors.push(String(event.reason)));
  const realFetch = window.fetch;
  window.fetch = (path, options) => {
    if (options && options.body) {
      const body = {...JSON.parse(options.body), attention: false};
      options = {...options, body: JSON.stringify(body)};
    }
    return realFetch(path, options);
  };
})();
</script>
"""

# The window resized after an answer without attention, then after an error answer.
RESIZES = """<script>
(async () => {
  const until = test => new Promise(done => {
    const timer = setInterval(() => { if (test()) { clearInterval(timer); done(); } }, 20);
  });
  const seen = {};
  await until(() => document.body.dataset.state === "ready");
  seen.translation = document.getElementById("translation").textContent;
  dispatchEvent(new Event("resize"));
  seen.afterAnswer = [...pageErrors];
  document.getElementById("source-text").value = Array(40).fill("the cat").join(" ");
  document.getElementById("translate-button").click();
  await until(() => document.body.dataset.state === "error");
  dispatchEvent(new Event("resize"));
  seen.afterError = [...pageErrors];
  seen.state = document.body.dataset.state;
  document.body.dataset.check = JSON.stringify(seen);
})();
</script>
</body>"""


def test_served_page_without_attention_survives_a_resize(server, tmp_path, monkeypatch):
    serve_changed_page(monkeypatch, tmp_path, RESIZES, start=ATTENTION_OFF)
    dom, _ = open_served(server, {"text": SENTENCE}, tmp_path)
    seen = json.loads(dom.body()["data-check"])
    assert seen["translation"] == server.translate({"text": SENTENCE})["translation"]
    assert seen["afterAnswer"] == [] and seen["afterError"] == []
    assert seen["state"] == "error" and not panels(dom)


def test_served_page_takes_the_beams_bound_from_the_server(server, tmp_path, monkeypatch):
    service = server.httpd.service
    real_info = service.info
    monkeypatch.setattr(service, "info", lambda: {**real_info(), "max_beam": 5})
    status, _, info = server.request("/api/info")
    assert status == 200 and info["max_beam"] == 5
    dom, _ = open_served(server, {}, tmp_path)
    assert dom.by_id("model-info") and dom.text["model-info"]  # the info has arrived
    assert dom.by_id("beam")["max"] == dom.by_id("n-best")["max"] == "5"

"""What the explorer's tests share: an ablation run made from the trained run of
conftest.py, headless Chromium, and a reader for the DOM it dumps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root, with nothing running in the background and no name resolving to
# any host: a page that tried to fetch anything from the network would fail to.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--virtual-time-budget=10000"]
NO_HOSTS = "--host-resolver-rules=MAP * ~NOTFOUND"
DATA_PATTERN = re.compile(r"window\.EXPLORER_DATA = (.*?);</script>", re.S)
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "source", "track", "wbr"}


def ablated_copy(run_dir: Path, folder: Path) -> Path:
    """A copy of `run_dir` marked as the "mask-after-softmax" variant of `transformer
    ablate`: explore() gives its model that wrong attention back."""
    ablated = folder / "mask-after-softmax"
    shutil.copytree(run_dir, ablated)
    config = json.loads((ablated / "config.json").read_text(encoding="utf-8"))
    config["ablation"] = {"variant": "mask-after-softmax"}
    (ablated / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return ablated


def embedded_data(page: str):
    """The window.EXPLORER_DATA that render_page inlined into `page`, parsed."""
    match = DATA_PATTERN.search(page)
    assert match, "no window.EXPLORER_DATA in the page"
    return json.loads(match.group(1))


def chromium(tmp_path: Path, *args: str, loopback: bool = False) -> str:
    """Run headless Chromium with CHROMIUM_FLAGS and `args`; its stdout.

    No host name resolves, not even 127.0.0.1 unless `loopback` (for a local server)."""
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not found: {CHROMIUM} (Debian: apt-get install chromium)")
    hosts = f"{NO_HOSTS}, EXCLUDE 127.0.0.1" if loopback else NO_HOSTS
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, hosts, f"--user-data-dir={profile}",
                           *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Dom(HTMLParser):
    """The elements of a page as (tag, attributes), and the text inside each id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []  # the id (or None) of each open element
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attrs))
        if tag not in VOID_TAGS:
            self._open.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag not in VOID_TAGS and self._open:
            self._open.pop()

    def handle_data(self, data):
        for name in filter(None, self._open):
            self.text[name] = self.text.get(name, "") + data

    def find(self, css_class: str) -> list[dict]:
        """The attributes of every element with the class `css_class`."""
        return [attrs for _, attrs in self.elements if css_class in attrs.get("class", "").split()]

    def body(self) -> dict:
        return next(attrs for tag, attrs in self.elements if tag == "body")

    def by_id(self, name: str) -> dict:
        return next(attrs for _, attrs in self.elements if attrs.get("id") == name)


def expected_panels(result: dict) -> set[tuple[str, str, str]]:
    """(kind, layer, head) of every attention head in an analyze() answer, as the page's
    data- attributes spell them."""
    return {(kind, str(layer), str(head))
            for kind, layers in result["attention"].items()
            for layer, heads in enumerate(layers) for head in range(len(heads))}


def panels(dom: Dom, column: str | None = None) -> list[tuple[str, str, str]]:
    """(kind, layer, head) of every .head-panel on the page (all columns, or one)."""
    found, current = [], None
    for _, attrs in dom.elements:
        current = attrs.get("data-column", current)
        if "head-panel" in attrs.get("class", "").split() and column in (None, current):
            found.append((attrs["data-kind"], attrs["data-layer"], attrs["data-head"]))
    return found


def page_requests(netlog: Path) -> list[str]:
    """The URLs a page asked the network for, read from Chromium's --log-net-log file.

    Chromium's own background requests (component updates, sign-in) have no initiator
    ("not an origin"); a page's carry its origin ("null" for a file:// page).
    """
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job and "url" in event.get("params", {})
            and event["params"].get("initiator") != "not an origin"]

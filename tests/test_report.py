"""`modelmake report`: artifacts/report.html after a build of two tiny recipes, checked as written
and as a real headless Chromium renders it (DOM after scripts, console, pixels).

Chromium comes from the system packages (`apt-get install chromium`; .ci/run installs it). Only
when it is missing locally are the browser tests skipped.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from buildkit import make_project
from test_compare import RECIPES, build, metrics_of, modelmake, shared_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
PLOT_RGB = (0xFB, 0xFC, 0xFD)    # the chart's plot area (report.CSS: svg .plot)
FRONT_RGB = (0xFB, 0x85, 0x00)   # a point on the Pareto front (svg .front-point circle)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    store = shared_store(tmp_path_factory)
    project = make_project(tmp_path_factory.mktemp("report") / "proj", RECIPES)
    build(project, store)
    r = modelmake(project, "report", store=store)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wrote artifacts/report.html (2 of 2 recipes with metrics)"
    return project, store


def expected_front(project: Path) -> set[str]:
    from modelmake.commands.report import Point, pareto

    pts = [Point(n, metrics_of(project, n)["latency_ms.p50"], metrics_of(project, n)["accuracy"]) for n in RECIPES]
    return {p.name for p in pareto(pts)}


class Tables(HTMLParser):
    """Rows of every table, by the table's class: {"metrics": [[cell, ...], ...], ...}."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables_of(text: str) -> dict[str, list[list[str]]]:
    p = Tables()
    p.feed(text)
    return p.tables


# ---------------------------------------------------------------- the page as written
def test_report_holds_metrics_steps_and_provenance(reported):
    from modelmake.core import digest
    from modelmake.build import records

    project, _ = reported
    text = (project / "artifacts/report.html").read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    tables = tables_of(text)
    metrics = {r[0]: r[1:] for r in tables["metrics"]}
    assert metrics["metric"] == ["tiny", "tiny-fp32"]
    for i, name in enumerate(["tiny", "tiny-fp32"]):
        m = metrics_of(project, name)
        assert metrics["accuracy"][i] == f"{m['accuracy']:.4f} ({m['delta.accuracy']:+.4f})"

    # each step with what its last run did and how long the result took to build
    rows = {r[0]: r for r in tables["steps"]}
    for task in ("source:tiny", "pass:tiny/finetune", "pass:tiny/quantize", "eval:tiny", "package:tiny",
                 "pass:tiny-fp32/fuse", "eval:tiny-fp32"):
        recipe = task.split(":")[1].split("/")[0]
        rec = json.loads((project / "artifacts" / recipe / "records" / (records.file_stem(task) + ".json")).read_text())
        assert rows[task][1] == ("built" if rec["built"] else "restored"), task
        assert rows[task][4] == rec["finished"]
    assert re.fullmatch(r"\d+\.\d+ s", rows["pass:tiny/finetune"][3])  # its build time, from the store

    # provenance: the store key and the digest of what is in artifacts/ now
    prov = {r[0]: r for r in tables["prov"]}
    rec = json.loads((project / "artifacts/tiny/records/eval-tiny.json").read_text())
    row = prov["artifacts/tiny/metrics.json"]
    assert row[1] == "eval:tiny" and row[2] == rec["key"]
    assert row[3] == digest.file_digest(project / "artifacts/tiny/metrics.json")
    assert rec["settings"]["host"]["cpu"] in row[5]
    assert f"onnxruntime {rec['settings']['libraries']['onnxruntime']}" in row[4]


def test_pareto_front_and_escaping():
    from modelmake.commands.report import Point, chart_svg, pareto

    pts = [Point("fast", 1.0, 0.80), Point("accurate", 5.0, 0.90), Point("worse", 6.0, 0.85),
           Point("same-speed-worse", 1.0, 0.70)]
    assert [p.name for p in pareto(pts)] == ["fast", "accurate"]
    svg = chart_svg([Point("<b>&x", 2.0, 0.5), Point("y", 3.0, 0.4)])
    assert "<b>" not in svg and "&lt;b&gt;&amp;x" in svg


# ---------------------------------------------------------------- in a real browser
def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
                           *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """What the page printed to the console, uncaught errors included (Chromium logs them as CONSOLE)."""
    return [l for l in stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]


@needs_chromium
def test_console_errors_are_caught_by_this_harness(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><p>x</p><script>notDefined();</script>")
    r = chromium(broken, tmp_path, "--dump-dom")
    assert any("Uncaught ReferenceError: notDefined is not defined" in l for l in console_messages(r.stderr)), r.stderr


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(reported, tmp_path):
    project, _ = reported
    page = project / "artifacts/report.html"
    r = chromium(page, tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr
    assert console_messages(r.stderr) == []
    dom = r.stdout
    assert 'data-points="2"' in dom  # the page's script ran to its end and saw both chart points
    for name in RECIPES:
        assert re.search(rf'<g class="point[^"]*" data-recipe="{re.escape(html.escape(name))}"', dom), name
    front = set(re.findall(r'<g class="point front-point" data-recipe="([^"]+)"', dom))
    assert front == expected_front(project)
    metrics = {r[0]: r[1:] for r in tables_of(dom)["metrics"]}
    assert metrics["metric"] == ["tiny", "tiny-fp32"] and "latency_ms.p50" in metrics

    shot = tmp_path / "report.png"
    r = chromium(page, tmp_path, "--window-size=900,1300", f"--screenshot={shot}")
    assert shot.is_file(), r.stderr
    assert console_messages(r.stderr) == []
    img = decode_png(shot.read_bytes())
    plot_rows = near(img, PLOT_RGB, 0).sum(axis=1) > 300
    assert plot_rows.sum() > 250, "the chart's plot area is not on screen"
    # a Pareto point drawn inside the chart, not just the legend's dot below it
    assert near(img[plot_rows], FRONT_RGB, 24).sum() > 40


# ---------------------------------------------------------------- a small PNG reader (no Pillow here)
def decode_png(data: bytes):
    """8-bit RGB/RGBA non-interlaced PNG -> array of shape (height, width, 3)."""
    import numpy as np

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w * bpp + 1)
    img = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.uint8)
    for y in range(h):
        f, cur = raw[y, 0], raw[y, 1:].copy()
        if f == 1:    # Sub: a running sum per channel, modulo 256
            cur = np.cumsum(cur.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif f == 2:  # Up
            cur = cur + prev
        elif f in (3, 4):  # Average, Paeth: each byte needs the one decoded just before it
            out, up = bytearray(cur.tobytes()), prev.tobytes()
            for i in range(w * bpp):
                a = out[i - bpp] if i >= bpp else 0
                b, c = up[i], up[i - bpp] if i >= bpp else 0
                if f == 3:
                    out[i] = (out[i] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.frombuffer(bytes(out), dtype=np.uint8)
        img[y], prev = cur, cur
    return img.reshape(h, w, bpp)[:, :, :3]


def near(img, rgb: tuple[int, int, int], tolerance: int):
    """Per pixel: is it within tolerance of rgb on every channel."""
    import numpy as np

    return (np.abs(img.astype(np.int16) - np.array(rgb, dtype=np.int16)) <= tolerance).all(axis=2)

"""The HTML report and its JSON sidecar (:mod:`wormflow.report`), on small synthetic inputs.

Inputs come from ``report_fixtures.make_report_inputs`` (the package's own
HDF5 writers and ``evaluate_scores``); nothing here reads ``results/``.

The browser test drives Debian's headless Chromium over the DevTools
protocol on a pipe (``tests/browser.py``).  A negative control (a page with
a blocked external image, a ``console.error`` and an exception) proves the
harness does see errors.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from browser import HAVE_CHROMIUM, NO_CHROMIUM, browse
from markupsafe import escape
from report_fixtures import HOSTILE_BATCH, HOSTILE_FILE, HOSTILE_REASON, ODD_FILE, PUBLISHED, TITLE, make_report_inputs

from wormflow import report as rpt
from wormflow.gallery import select
from wormflow.ledger import agreement
from wormflow.report import render
from wormflow.scorefile import ScoreFile

METRICS = ("f1", "auroc", "average_precision", "precision", "recall")


def _run_report(root: Path, **kwargs) -> SimpleNamespace:
    inputs = make_report_inputs(root / "inputs", **kwargs)
    html_path, json_path = root / "out" / "report.html", root / "out" / "report.json"
    returned = rpt.report_step(**inputs["kwargs"], out_html=str(html_path), out_json=str(json_path))
    return SimpleNamespace(
        inputs=inputs,
        html_path=html_path,
        html=html_path.read_text(encoding="utf-8"),
        json_text=json_path.read_text(encoding="utf-8"),
        data=json.loads(json_path.read_text(encoding="utf-8")),
        returned=returned,
    )


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> SimpleNamespace:
    """All three methods, three seeds, every test image in the galleries, hostile names everywhere."""
    return _run_report(tmp_path_factory.mktemp("report"), seeds=3, gallery_size=16)


# --------------------------------------------------------------------------- self-contained, safe


def test_html_is_self_contained(full):
    html = full.html
    for needle in ("http://", "https://", 'src="//', "<script", "<link", "@import", "url(", "<iframe", "<object"):
        assert needle not in html, needle
    for attr, value in re.findall(r"\b(src|href)\s*=\s*\"([^\"]*)\"", html):
        assert value.startswith("data:image/") if attr == "src" else value.startswith("#"), (attr, value[:60])
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert len(re.findall(r"<img src=\"data:image/(?:png|svg\+xml);base64,", html)) > 20
    assert full.html_path.stat().st_size < 5_000_000
    assert not [p for p in full.html_path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes left nothing


def test_sidecar_is_strict_json_and_returned(full):
    def refuse(token):
        raise AssertionError(f"non-strict JSON constant {token}")

    assert json.loads(full.json_text, parse_constant=refuse) == full.returned
    assert "NaN" not in full.json_text and "Infinity" not in full.json_text


def test_hostile_strings_are_escaped(full):
    html = full.html
    for text in (HOSTILE_FILE, HOSTILE_REASON, HOSTILE_BATCH, TITLE):
        assert str(escape(text)) in html, text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in html
    assert "<script" not in html and "&lt;script&gt;alert(&#34;reason&#34;)" in html
    assert "<b>test</b>" not in html and "&lt;b&gt;test&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(&#39;config&#39;)&lt;/script&gt;" in html  # config values in the YAML dump
    assert "\u202e" not in html and "\\u202egnp.exe" in html  # bidi override made visible
    assert "wörm 🪱" in html  # ordinary unicode stays readable
    # the sidecar keeps the names exactly
    assert any(q["id"] == HOSTILE_FILE and q["reason"] == HOSTILE_REASON for q in full.data["quarantine"])
    assert any(q["id"] == ODD_FILE for q in full.data["quarantine"])


def test_template_never_marks_data_safe():
    text = (render.default_templates_dir() / "report.html.j2").read_text(encoding="utf-8")
    assert not re.search(r"\|\s*safe\b", text) and "Markup" not in text and "autoescape false" not in text
    assert render.template_environment().autoescape is True


def test_templates_dir_override_is_autoescaped(tmp_path):
    (tmp_path / "report.html.j2").write_text("<p>{{ title }}</p>")
    assert render.render_html({"title": HOSTILE_FILE}, templates_dir=tmp_path) == f"<p>{escape(HOSTILE_FILE)}</p>"


def test_sections_in_order_with_index(full):
    html = full.html
    positions = [html.index(f'<section id="{anchor}">') for anchor, _ in rpt.SECTIONS]
    assert positions == sorted(positions)
    nav = html[html.index("<nav") : html.index("</nav>")]
    assert all(f'href="#{anchor}"' in nav for anchor, _ in rpt.SECTIONS)


# --------------------------------------------------------------------------- numbers


def test_numbers_match_metrics_json(full):
    metrics = full.inputs["metrics"]["methods"]
    rows = {r["method"]: r for r in full.data["summary"]["rows"] + full.data["summary"]["floors"]}
    assert set(rows) == set(metrics) == {"vae", "gan", "resnet50", "dark_pixels"}
    assert [r["method"] for r in full.data["summary"]["floors"]] == ["dark_pixels"]
    for name, block in metrics.items():
        row = rows[name]
        assert row["threshold"] == block["threshold"]
        for k in METRICS:
            assert row["metrics"][k] == block["metrics"][k], (name, k)
            assert row["intervals"][k] == block["intervals"][k], (name, k)
            assert render.fmt_ci(block["intervals"][k]) in full.html
        assert f"{block['metrics']['f1']:.3f}" in full.html
        assert f"{block['threshold']:.4f}" in full.html
        if "seed_summary" in block:
            assert row["seed_summary"]["f1"] == block["seed_summary"]["f1"]
            assert f"{block['seed_summary']['f1']['mean']:.3f} ± {block['seed_summary']['f1']['sd']:.3f}</small>" in full.html
            assert "mean ± sd over 3 seeds" in full.html
    assert "seed_summary" not in metrics["dark_pixels"] and rows["dark_pixels"]["seeds"] == []
    cms = {c["method"]: c["matrix"] for c in full.data["confusion_matrices"]}
    assert all(cms[n] == metrics[n]["confusion_matrix"] for n in metrics)
    assert full.data["summary"]["n_test"] == 16
    assert full.data["summary"]["published_notes"] == {"gan_mixed": PUBLISHED["gan_mixed"]}
    assert "0.660" in full.html and "0.871" in full.html


def test_batches_show_what_the_ledger_wrote(full):
    ledger = json.loads(Path(full.inputs["kwargs"]["ledger_path"]).read_text())
    summaries = {s["batch"]: s for s in ledger["batches"]}
    rows = {r["batch"]: r for r in full.data["batches"]}
    assert list(rows) == ["2026-01-01", "2026-01-02", "2026-01-03", HOSTILE_BATCH]
    ok, empty, quarantined, rejected = rows.values()
    assert (ok["n_files"], ok["n_scored"], ok["n_quarantined"], ok["status"]) == (8, 6, 2, "ok")
    assert (empty["n_scored"], empty["status"]) == (0, "empty")
    assert (quarantined["n_scored"], quarantined["n_quarantined"], quarantined["status"]) == (0, 2, "nothing scorable")
    assert rejected["unprocessed"] and rejected["kind"] == "rejected" and rejected["status"].startswith("rejected")
    for name in ("2026-01-01", "2026-01-02", "2026-01-03"):
        s, r = summaries[name], rows[name]
        assert r["flagged"] == {m: s["methods"][m]["flagged_share"] for m in r["flagged"]}
        assert r["ks"] == {m: s["methods"][m]["ks"] for m in r["ks"]}
        assert r["drift_any"] == s["drift"] and r["agreement"] == s["agreement"]
    assert ok["flagged"]["vae"] == pytest.approx(5 / 6) and ok["ks"]["vae"] is not None
    assert set(ok["agreement"]["pairs"]) == {
        "vae-gan",
        "vae-resnet50",
        "vae-dark_pixels",
        "gan-resnet50",
        "gan-dark_pixels",
        "resnet50-dark_pixels",
    }
    assert empty["agreement"]["all"] is None and empty["flagged"]["vae"] is None
    for name in ("2026-01-02", "2026-01-03"):
        assert f'<code class="name">{name}</code>' in full.html
    assert ">nothing scorable<" in full.html and ">empty<" in full.html
    assert full.data["trends"]["batches"] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert full.data["trends"]["beyond"] == [n for n in ("2026-01-01",) if summaries[n]["drift"]]
    assert len(full.data["quarantine"]) == 4
    assert {q["collection"] for q in full.data["quarantine"]} == {"2026-01-01", "2026-01-03"}


def test_galleries_show_every_column(full):
    galleries = {g["method"]: g for g in full.data["galleries"]["methods"]}
    assert list(galleries) == ["vae", "gan", "resnet50"]
    for g in galleries.values():
        assert len(g["misses"]) + len(g["hits"]) == 16 == g["n_misses"] + g["n_hits"]
        own = [p["method"] for p in g["misses"][0]["methods"]].index(g["method"]) if g["misses"] else 0
        margins = [abs(e["methods"][own]["score"] - e["methods"][own]["threshold"]) for e in g["misses"]]
        assert margins == sorted(margins, reverse=True)  # most wrong first
    assert str(escape(f"wormed/{HOSTILE_FILE}")) in full.html
    for title in ("Original", "VAE reconstruction", "VAE error map", "VAE colour mask", "GAN reconstruction", "GAN colour mask"):
        assert f"<th>{title}</th>" in full.html, title
    assert full.html.count('<td class="none"') == 0  # every thumbnail there


def test_provenance(full):
    prov = full.data["provenance"]
    models = {m["method"]: m for m in prov["models"]}
    assert all(len(m["checkpoint_sha256"]) == 64 for m in models.values())
    assert models["vae"]["trained_utc"] == "2026-01-01T00:00:00Z" and models["vae"]["seeds"] == [0, 1, 2]
    bench = {(b["stage"], b["method"]): b for b in prov["benchmarks"]}
    score = bench[("score_shard", "")]
    assert (score["n_files"], score["median_s"], score["max_s"]) == (3, 1.0, 2.0)
    assert score["images_per_s"] == pytest.approx((16 + 6) / 4.0)
    assert bench[("train", "vae")]["images_per_s"] is None
    assert {"wormflow", "torch", "numpy", "h5py", "scikit-learn", "snakemake"} <= set(prov["versions"])
    assert "ks_max: 0.3" in prov["config_yaml"]


def test_unreadable_inputs_do_not_stop_the_report(tmp_path):
    inputs = make_report_inputs(tmp_path / "in")
    kwargs = inputs["kwargs"]
    Path(kwargs["gallery_path"]).write_bytes(b"not HDF5")
    Path(kwargs["ledger_path"]).write_text("{broken")
    data = rpt.report_step(**kwargs, out_html=str(tmp_path / "r.html"), out_json=str(tmp_path / "r.json"))
    html = (tmp_path / "r.html").read_text()
    assert "ledger (ledger.json) not read" in html and "galleries not read" in html
    assert data["batches"] == [] and data["summary"]["rows"]  # the evaluation is still shown


# --------------------------------------------------------------------------- method subsets


@pytest.mark.parametrize("methods", [("resnet50",), ("gan", "resnet50"), ("vae",)], ids="+".join)
def test_method_subsets_render(tmp_path, methods):
    from wormflow.methods import get

    out = _run_report(tmp_path, methods=methods, gallery_size=3)
    assert out.data["methods"] == list(methods)
    assert [r["method"] for r in out.data["summary"]["rows"]] == list(methods)
    for m in ("vae", "gan", "resnet50"):
        assert (get(m).label in out.html) == (m in methods), m
    ok = out.data["batches"][0]
    assert set(ok["flagged"]) == {*methods, "dark_pixels"}
    assert "<img src=x" not in out.html


# --------------------------------------------------------------------------- helpers


def test_visible_and_json_clean():
    assert render.visible("a\u202eb\nc\x00") == "a\\u202eb\\u000ac\\u0000"
    assert render.visible("wörm 🪱 'q'") == "wörm 🪱 'q'"
    assert render.json_clean({"a": float("nan"), "b": [np.float32(1.5), np.int8(2), np.bool_(True)], 3: np.array([np.inf])}) == {
        "a": None,
        "b": [1.5, 2, True],
        "3": [None],
    }
    assert render.fmt(float("nan")) == "–" and render.fmt(0.12345) == "0.123" and render.fmt_pct(0.5) == "50.0%"


def test_agreement():
    preds = {"a": np.array([1, 0, 1, np.nan]), "b": np.array([1, 1, 1, 0]), "c": np.array([1, 0, 0, 0])}
    out = agreement(preds)
    assert out["n"] == 3 and out["all"] == pytest.approx(1 / 3)
    assert out["pairs"] == pytest.approx({"a-b": 2 / 3, "a-c": 2 / 3, "b-c": 1 / 3})
    assert agreement({"a": np.array([1.0])})["all"] is None


def test_select_gallery_orders_misses_by_wrongness():
    sf = ScoreFile("x", [f"i{k}" for k in range(6)], np.array([0, 0, 1, 1, 0, 1]), {})
    sf.score["m"] = np.array([0.9, 0.6, 0.1, 0.45, 0.2, 0.8])
    sf.pred["m"] = (sf.score["m"] >= 0.5).astype(float)
    sf.threshold["m"] = 0.5
    picks = select(sf, "m", 10)
    assert picks["misses"] == [0, 2, 1, 3]  # margins 0.4, 0.4 (tie: by id), 0.1, 0.05
    assert picks["hits"] == [5, 4]  # classes alternate (wormed first), most confident first


# --------------------------------------------------------------------------- the browser


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)
def test_report_opens_in_headless_chromium(full, tmp_path):
    from PIL import Image

    # negative control: the harness must see a CSP-blocked load, a console error and an exception
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="img-src data:">'
        '<img src="https://example.invalid/x.png"><script>console.error("boom"); notDefined();</script>'
    )
    problems, _, _ = browse(bad, tmp_path)
    assert any("console.error: boom" in p for p in problems)
    assert any(p.startswith("exception") for p in problems)
    assert any("Content Security Policy" in p for p in problems)

    problems, page, png = browse(full.html_path, tmp_path)
    assert problems == []
    assert page["broken"] == 0 and page["images"] > 20 and page["fetched"] == []
    assert page["sections"] == len(rpt.SECTIONS)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    (tmp_path / "report.png").write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert shot.shape == (4000, 1280) and shot.std() > 10  # not a blank page

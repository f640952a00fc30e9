"""The HTML report and its JSON sidecar (:mod:`wormflow.report`), on small synthetic inputs.

Inputs come from ``report_fixtures.make_report_inputs`` (the package's own
HDF5 writers and ``evaluate_scores``); nothing here reads ``results/``.

The browser test drives Debian's headless Chromium over the DevTools
protocol on a pipe (``tests/browser.py``).  A negative control (a page with
a blocked external image, a ``console.error`` and an exception) proves the
harness does see errors.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from browser import HAVE_CHROMIUM, NO_CHROMIUM, browse
from markupsafe import escape
from report_fixtures import (
    BAD_THUMB,
    BATCHES,
    FIELD_BATCHES,
    HOSTILE_BATCH,
    HOSTILE_FIELD_FILE,
    HOSTILE_FIELD_REASON,
    HOSTILE_FILE,
    HOSTILE_REASON,
    HOSTILE_WELL,
    ODD_FILE,
    PUBLISHED,
    TITLE,
    make_report_inputs,
    plate_wells,
)

from wormflow import plots
from wormflow import report as rpt
from wormflow.gallery import select
from wormflow.ledger import agreement
from wormflow.report import plates as plate_sections
from wormflow.report import render
from wormflow.scorefile import ScoreFile

METRICS = ("f1", "auroc", "average_precision", "precision", "recall")
REPORT_BOUND_3X97 = 8_000_000  # bytes: the page with 3 detailed batches of 97 fields (measured: see the test)


def _run_report(root: Path, **kwargs) -> SimpleNamespace:
    inputs = make_report_inputs(root / "inputs", **kwargs)
    return _render(root / "out", inputs)


def _render(out: Path, inputs: dict, **report) -> SimpleNamespace:
    """Run ``report_step`` on ``inputs`` into ``out`` (``report``: keys that replace those of the config's report section)."""
    kwargs = dict(inputs["kwargs"])
    if report:
        kwargs["config"] = {**kwargs["config"], "report": {**kwargs["config"]["report"], **report}}
    html_path, json_path = out / "report.html", out / "report.json"
    returned = rpt.report_step(**kwargs, out_html=str(html_path), out_json=str(json_path))
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
    """All three methods, three seeds, every test image in the galleries, hostile names everywhere, and four
    batches of fields (:data:`report_fixtures.FIELD_BATCHES`: the latest three shown in detail)."""
    return _run_report(tmp_path_factory.mktemp("report"), seeds=3, gallery_size=16, field_batches=FIELD_BATCHES)


# --------------------------------------------------------------------------- self-contained, safe


def assert_self_contained(html: str) -> None:
    """No script, no external reference: every ``src`` a ``data:image/`` URI, every ``href`` an anchor, the CSP set."""
    for needle in ("http://", "https://", 'src="//', "<script", "<link", "@import", "url(", "<iframe", "<object", "javascript:"):
        assert needle not in html, needle
    for attr, value in re.findall(r"\b(src|href)\s*=\s*\"([^\"]*)\"", html):
        assert value.startswith("data:image/") if attr == "src" else value.startswith("#"), (attr, value[:60])
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_html_is_self_contained(full):
    html = full.html
    assert_self_contained(html)
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
    assert list(rows) == [*BATCHES, *FIELD_BATCHES, HOSTILE_BATCH]
    ok, empty, quarantined, rejected = (rows[b] for b in (*BATCHES, HOSTILE_BATCH))
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
    assert full.data["trends"]["batches"] == [*BATCHES, *FIELD_BATCHES]
    assert full.data["trends"]["beyond"] == [n for n in ("2026-01-01",) if summaries[n]["drift"]]
    assert len(full.data["quarantine"]) == 4 + 3  # and the fields that were not scored
    assert {q["collection"] for q in full.data["quarantine"]} == {"2026-01-01", "2026-01-03", "2026-02-03", "2026-02-04"}


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
    galleries = full.html[full.html.index('<section id="galleries">') : full.html.index('<section id="batches">')]
    assert galleries.count('<td class="none"') == 0  # every thumbnail there


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


# --------------------------------------------------------------------------- plates (batches of fields)

DETAILED = ["2026-02-04", "2026-02-03", "2026-02-02"]  # the latest three batches of fields, latest first


def _section(html: str, anchor: str, end: str) -> str:
    return html[html.index(f'id="{anchor}"') : html.index(f'id="{end}"')]


def _svg(uri: str) -> str:
    assert uri.startswith("data:image/svg+xml;base64,")
    return base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")


def _crossed(svg: str) -> int:
    """Red crosses on the plate (the legend's own cross not counted)."""
    return len([u for u in re.findall(r"<use [^>]*>", svg) if "stroke: #c0392b" in u]) - 1


def _summaries(out: SimpleNamespace) -> dict:
    ledger = json.loads(Path(out.inputs["kwargs"]["ledger_path"]).read_text())
    return {s["batch"]: s for s in ledger["batches"]}


def test_plate_positions():
    assert plate_sections.plate_position("A01") == (0, 0) and plate_sections.plate_position("P24") == (15, 23)
    assert plate_sections.plate_position("H12") == (7, 11) and plate_sections.plate_position("B3") == (1, 2)
    for other in ("Q01", "A25", "A00", "a01", "A01 ", "A001", "", HOSTILE_WELL, None, 7):
        assert plate_sections.plate_position(other) is None, other


def test_plate_figure_marks_wells():
    svg = _svg(plots.plate_figure(96, {(0, 0): 0.1, (0, 1): 0.0}, [(0, 0), (0, 1), (3, 5), (7, 11)], 0.1, "t", "s"))
    assert _crossed(svg) == 2  # D6 and H12: a field, not scored
    assert _crossed(_svg(plots.plate_figure(96, {(0, 0): 0.1}, [(0, 0)], 0.1, "t", "s"))) == 0
    assert len(re.findall(r"<use ", _svg(plots.plate_figure(384, {}, [], 0.0, "t", "s")))) >= 384  # every well drawn


def test_plate_maps_per_method_and_batch(full):
    plates = {b["batch"]: b for b in full.data["plates"]["batches"]}
    assert list(plates) == DETAILED and full.data["plates"]["n_field_batches"] == 4
    assert [plates[b]["n_wells"] for b in DETAILED] == [384, 96, None]  # A01…E01; A01…B12; single images only
    html = _section(full.html, "plates", "trends")
    blocks = [_section(html + 'id="end"', f"plate-{i}", f"plate-{i + 1}" if i < 2 else "end") for i in range(3)]
    labels = {r["method"]: r["label"] for r in full.data["summary"]["rows"] + full.data["summary"]["floors"]}
    for name, block in zip(DETAILED, blocks):
        assert f'<code class="name">{name}</code>' in block
        for m in ("vae", "gan", "resnet50", "dark_pixels"):
            alt = f"-well plate map of batch {name}, {escape(labels[m])}:"
            assert block.count(alt) == (0 if name == "2026-02-02" else 1), (name, m)
    assert "No field of this batch names a plate well: no plate map." in blocks[2]
    assert "2026-02-01" not in html  # the oldest batch of fields: trends only
    # the quarantined wells are crossed on every method's map, the absent wells are not
    for i, (name, well) in enumerate([("2026-02-04", "D24"), ("2026-02-03", "B03")]):
        uris = re.findall(r'<img src="(data:image/svg\+xml;base64,[^"]+)" alt="[0-9]+-well plate map', blocks[i])
        assert len(uris) == 4 and all(_crossed(_svg(u)) == 1 for u in uris), name
        rows = {r["well"]: r for r in plates[name]["wells"]}
        assert rows[well]["status"] == "quarantined" and rows[well]["plate_position"] == list(plate_sections.plate_position(well))
    assert "D24: channel w2 missing" in blocks[0]


def test_plate_numbers_equal_the_summaries(full):
    summaries = _summaries(full)
    for block in full.data["plates"]["batches"]:
        fields = summaries[block["batch"]]["fields"]
        assert (block["tile"], block["stride"]) == (64, 32)
        assert block["methods"] == ["vae", "gan", "resnet50", "dark_pixels"]
        wells = {w["id"]: w for w in fields["wells"]}
        assert sorted(w["id"] for w in block["wells"]) == sorted(wells)  # every field, also those left out of the page
        for w in block["wells"]:
            src = wells[w["id"]]
            assert (w["well"], w["kind"], w["status"], w["files"], w["methods"]) == (
                src["well"],
                src["kind"],
                src["status"],
                src["files"],
                src["methods"],
            )
            assert w["reason"] == src.get("reason", "")
        ok = [w for w in fields["wells"] if w["status"] == "ok"]
        assert block["n_fields"] == len(fields["wells"]) and block["n_quarantined"] == len(fields["wells"]) - len(ok)
        for row in block["table"]:
            m = row["method"]
            assert row["n_scored"] == len(ok)
            assert row["n_flagged"] == sum(w["methods"][m]["pred"] for w in ok)
            assert row["mean_worm_share"] == pytest.approx(np.mean([w["methods"][m]["worm_share"] for w in ok]))
            assert row["tiles_flagged"] == fields["tiles_flagged"][m]
        for key in ("agreement_fields", "agreement_tiles"):
            assert block[key] == fields[key]
        assert block["scale_max"] == pytest.approx(
            max(
                (w["methods"][m]["worm_share"] for w in ok if plate_sections.plate_position(w["well"]) for m in w["methods"]),
                default=0,
            )
            or None
        )
        assert "thumbnails" not in json.dumps(block["wells"]) and "data:image" not in json.dumps(block)
    latest = full.data["plates"]["batches"][0]
    vae = next(r for r in latest["table"] if r["method"] == "vae")
    html = _section(full.html, "plate-0", "plate-1")
    assert f"{100 * vae['mean_worm_share']:.2f}%" in html and f"{100 * vae['tiles_flagged']:.1f}%" in html
    assert f"{100 * latest['agreement_tiles']['pairs']['vae-gan']:.1f}%" in html
    # trends: every batch of fields, the same numbers as the tables
    trends = full.data["trends"]["fields"]
    assert trends["batches"] == list(FIELD_BATCHES)
    assert trends["mean_worm_share"]["vae"][-1] == vae["mean_worm_share"]
    ok_old = [w for w in summaries["2026-02-01"]["fields"]["wells"] if w["status"] == "ok"]
    assert trends["flagged_share"]["gan"][0] == pytest.approx(np.mean([w["methods"]["gan"]["pred"] for w in ok_old]))
    assert "data:image" not in full.json_text


def test_well_thumbnails_in_plate_order_with_a_row_limit(full, monkeypatch):
    plates = {b["batch"]: b for b in full.data["plates"]["batches"]}
    latest = plates["2026-02-04"]
    assert (len(latest["wells"]), latest["thumbnail_rows"], latest["n_left_out"]) == (99, 96, 3)
    html = _section(full.html, "plate-0", "plate-1")
    assert "96 of 99 field(s) shown, in plate order" in html and "<strong>3 left out</strong>" in html
    thumbs = html[html.index('<table class="wells thumbs">') :]
    wells = re.findall(r'<div class="id"><strong>([^<]*)</strong></div>', thumbs)
    assert wells == plate_wells(96)  # A01 … D24 in plate order; E01 and the two fields off the plate left out
    assert thumbs.count('alt="composite of ') == 95  # D24 (not scored) has none
    assert thumbs.count('alt="VAE + colour heuristic map of ') == 94  # and A01's vae map was not a data: image URI
    assert thumbs.count('<td class="none"') == 5 + 1
    d24 = thumbs[thumbs.index("<strong>D24</strong>") :]
    assert d24.index("channel w2 missing") < d24.index("</tr>")  # the reason in the row
    assert (
        len(re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="[^"]+" width="144" height="108">', thumbs))
        == 95 + 94 + 3 * 95
    )
    # fewer rows and fewer detailed batches by configuration
    out = _render(full.html_path.parent.parent / "limited", full.inputs, plates=1, max_well_thumbnails=10)
    assert [b["batch"] for b in out.data["plates"]["batches"]] == ["2026-02-04"]
    assert out.data["plates"]["batches"][0]["n_left_out"] == 89 and "<strong>89 left out</strong>" in out.html
    assert out.html.count('alt="composite of ') == 10
    monkeypatch.setattr(plate_sections, "THUMBNAIL_BUDGET", 200_000)  # the page-wide bound on thumbnail data
    budget = _render(full.html_path.parent.parent / "budget", full.inputs)
    shown = [b["thumbnail_rows"] for b in budget.data["plates"]["batches"]]
    assert 0 < shown[0] < 20 and shown[1:] == [0, 0]
    assert sum(len(u) for u in re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', budget.html)) <= 200_000
    assert "also to keep the page's thumbnails under 0.2 MB" in budget.html
    none = _render(full.html_path.parent.parent / "none", full.inputs, plates=0)
    assert none.data["plates"]["batches"] == [] and "No batch of fields shown (<code>report.plates</code> = 0)" in none.html
    assert none.data["trends"]["fields"]["batches"] == list(FIELD_BATCHES)  # the trends still have every batch


def test_field_strings_are_escaped(full):
    html = _section(full.html, "plates", "trends")
    for text in (HOSTILE_WELL, HOSTILE_FIELD_FILE, HOSTILE_FIELD_REASON):
        assert str(escape(render.visible(text))) in html, text
    assert "A01&#34;&gt;&lt;img src=x onerror=alert(3)&gt;\\u202eFIT.tif" in html
    assert "&lt;script&gt;alert(5)&lt;/script&gt;" in html and "&lt;b&gt;channel&lt;/b&gt;" in html
    assert "<img src=x" not in full.html and "<script" not in full.html and "\u202e" not in full.html
    assert f'alt="composite of {escape(render.visible(HOSTILE_WELL))}"' in full.html  # a well id inside an attribute
    assert BAD_THUMB not in full.html and "javascript:" not in full.html
    assert (
        "thumbnails of batch 2026-02-04" in full.html and "1 image(s) left out (not a base64 JPEG or PNG data: URI" in full.html
    )
    # the sidecar keeps the strings exactly
    wells = [w for b in full.data["plates"]["batches"] for w in b["wells"]]
    assert any(w["well"] == HOSTILE_WELL for w in wells)
    assert any(w["files"] == [HOSTILE_FIELD_FILE] and w["reason"] == HOSTILE_FIELD_REASON for w in wells)


def test_missing_or_broken_thumbnails_are_problems_not_crashes(full, tmp_path):
    problems = re.findall(r'<p class="bad">Input problem: (.*?)</p>', full.html)
    assert any(p.startswith("thumbnails of batch 2026-02-03 not read") and "No such file" in p for p in problems)
    block = _section(full.html, "plate-1", "plate-2")
    assert "No thumbnails for this batch" in block and 'alt="composite of' not in block
    assert block.count('<td class="none"') == 24 * 5  # every row still there, with its numbers
    assert "thumbnails of batch 2026-02-01" not in full.html  # not detailed: never read
    out = _run_report(
        tmp_path,
        field_batches={
            "2026-02-01": {"wells": plate_wells(3), "thumbnails": "broken"},
            "2026-02-02": {"wells": plate_wells(2), "thumbnails": "no-wells"},
        },
    )
    problems = re.findall(r'<p class="bad">Input problem: (.*?)</p>', out.html)
    assert any(p.startswith("thumbnails of batch 2026-02-01 not read") and "Expecting value" in p for p in problems)
    assert any(p.startswith("thumbnails of batch 2026-02-02 not read") and "no &#34;wells&#34; object" in p for p in problems)
    assert [len(b["wells"]) for b in out.data["plates"]["batches"]] == [2, 3]
    assert out.html.count("No thumbnails for this batch") == 2


def test_report_size_with_three_detailed_plates(tmp_path):
    """The bound the page keeps with its defaults: 3 detailed batches × 97 fields (96 scored, one not), four
    methods, thumbnails as large as real ones: 96 rows × 5 JPEGs per batch."""
    spec = {"wells": plate_wells(97), "quarantined": {"D24": "field D24: channel w2 missing"}}
    out = _run_report(tmp_path, gallery_size=8, field_batches={f"2026-03-0{k}": spec for k in (1, 2, 3)})
    thumbs = json.loads((tmp_path / "inputs" / "results" / "batches" / "2026-03-01" / "thumbnails.json").read_text())
    composites = [len(w["composite"]) for w in thumbs["wells"].values()]
    maps = [len(u) for w in thumbs["wells"].values() for u in w["maps"].values()]
    assert np.mean(composites) > 4000 and np.mean(maps) > 2900  # base64 of ~3.2 kB and ~2.3 kB JPEGs (BBBC010: 2.7, 2.3)
    assert [b["thumbnail_rows"] for b in out.data["plates"]["batches"]] == [96, 96, 96]
    assert out.html.count('alt="composite of ') == 3 * 95
    assert_self_contained(out.html)
    size = out.html_path.stat().st_size
    print(f"report with 3 detailed batches of 97 fields: {size / 1e6:.2f} MB")
    assert size < REPORT_BOUND_3X97


def test_a_year_of_batches_of_fields(tmp_path):
    """365 nightly batches of 97 fields in the ledger: three in detail, every one in the trends; the older
    batches' thumbnails are never read (they are not even written here)."""
    import datetime

    days = [(datetime.date(2025, 1, 1) + datetime.timedelta(k)).isoformat() for k in range(365)]
    spec = {"wells": plate_wells(97), "quarantined": {"D24": "field D24: channel w2 missing"}}
    batches = {d: spec if k >= 362 else {**spec, "thumbnails": "missing"} for k, d in enumerate(days)}
    out = _run_report(tmp_path, gallery_size=4, field_batches=batches)
    assert [b["batch"] for b in out.data["plates"]["batches"]] == days[:-4:-1]
    assert out.data["trends"]["fields"]["batches"] == days and out.data["plates"]["n_field_batches"] == 365
    assert all(len(v) == 365 and None not in v for v in out.data["trends"]["fields"]["mean_worm_share"].values())
    assert "Input problem" not in out.html  # no thumbnails.json of an older batch was looked for
    figure = re.search(r'<img src="(data:image/svg\+xml;base64,[^"]+)" alt="Mean estimated worm area share', out.html)
    assert figure and len(figure.group(1)) < 250_000  # lines, no markers, 12 labelled batches
    assert_self_contained(out.html)
    size, sidecar = out.html_path.stat().st_size, len(out.json_text.encode())
    print(f"report with 365 batches of fields (3 in detail): {size / 1e6:.2f} MB, report.json {sidecar / 1e6:.2f} MB")
    assert size < REPORT_BOUND_3X97 + 1_000_000 and sidecar < 2_000_000


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

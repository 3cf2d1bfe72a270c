"""The HTML pages, opened in headless Chromium: ``restoration report`` of a real restore job (the
tiny model, photos, a broken file) -- every image renders, no console error, the table sorts; a
prefix without a manifest, or images deleted after the job, give a clear line or a row on the page
-- and ``restoration compare`` of three models, whose flip switch cycles through their outputs;
and what a routed run's images needed (their measures, extremes and routes), on a manifest
written without running a model."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Browser
from PIL import Image

from restoration import config as config_lib
from restoration.cli import main
from restoration.models.checkpoint import save_checkpoint
from restoration.models.fused import ModelConfig, build_model
from restoration.restore.run import LocalRestoreExecutor, run_restore
from restoration.restore.settings import RestoreConfig

SCREENSHOTS = Path(os.environ.get("RESTORATION_SCREENSHOTS", "")) if os.environ.get("RESTORATION_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished restore job: 10 noisy photo crops (one gray), a broken file; its --output."""
    return make_job(tmp_path_factory.mktemp("report-job"), count=10)


def make_job(root: Path, *, count: int, extra: dict[str, bytes] | None = None) -> Path:
    """A restore job of ``count`` noisy photo crops, a broken file and the ``extra`` files (name:
    bytes) under ``root``; its --output."""
    from skimage import data

    rng = np.random.default_rng(0)
    (root / "in" / "sub").mkdir(parents=True)
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "moon", "coins", "hubble_deep_field",
             "immunohistochemistry", "cat")
    for index, name in enumerate(names[:count]):
        pixels = getattr(data, name)()[:120, :150].astype(np.float32)
        noisy = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / "in" / ("sub" if index % 3 == 0 else "") / f"{name}.png")
    (root / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    for name, content in (extra or {}).items():
        (root / "in" / name).write_bytes(content)
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="denoise", widths=(8, 8, 16, 16, 24, 24)), backbone_weights=None)
    with torch.no_grad():
        model.head.bias.fill_(4 / 255)  # a model that visibly changes every image
    checkpoint = save_checkpoint(model, root / "model")
    config = config_lib.load_config(RestoreConfig, overrides=["predictor.precision=fp32"])
    run_restore(str(root / "in"), str(root / "out"), task="denoise", model=str(checkpoint), config=config,
                executor=LocalRestoreExecutor(), echo=lambda line: None)
    return root / "out"


@pytest.mark.timeout(300)
def test_the_report_page_renders_and_sorts_in_a_real_browser(job: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(job), "--html", str(page), "--sample", "4", "--extremes", "2"]) == 0
    said = capsys.readouterr().out
    assert re.search(r"wrote .*report.html: 11 manifest rows, \d+ images shown, .* peak memory \d+ MB", said), said
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from a network
    with Browser(tmp_path / "profile") as browser:
        browser.open(page)
        assert browser.evaluate("document.images.length") >= 4 * 4  # 4 pairs at least, 4 images each
        assert browser.broken_images() == []
        assert browser.errors == []
        counts = browser.evaluate("Array.from(document.querySelectorAll('.card')).map(c => c.textContent)")
        assert "11inputs" in counts and "10ok" in counts and "1error" in counts, counts
        assert "not a PNG" in text or "decode" in browser.evaluate("document.body.innerText")
        # Sort the table by mean change, both ways.
        values = "Array.from(document.querySelectorAll('#inputs tbody tr')).map(r => parseFloat(r.children[2].dataset.value))"
        browser.evaluate("document.querySelectorAll('#inputs th')[2].click()")
        ascending = browser.evaluate(values)
        browser.evaluate("document.querySelectorAll('#inputs th')[2].click()")
        descending = browser.evaluate(values)
        assert len(ascending) == 11 and ascending == sorted(ascending) and descending == sorted(ascending)[::-1]
        assert browser.evaluate("document.querySelector('svg polyline').getAttribute('points').split(' ').length") == 10
        shot = browser.screenshot((SCREENSHOTS or tmp_path) / "report.png")
    assert Image.open(shot).size[1] > 1000


@pytest.mark.timeout(300)
def test_deleted_images_are_rows_and_a_missing_manifest_is_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    copy = make_job(tmp_path, count=3)
    for path in copy.rglob("*.png"):
        path.unlink()  # the outputs are gone; the manifest stays
    page = tmp_path / "gone.html"
    assert main(["report", str(copy), "--html", str(page), "--sample", "3", "--extremes", "0"]) == 0
    text = page.read_text()
    assert text.count("cannot be shown") == 3 and "Traceback" not in text
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nothing-here"), "--html", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no manifest under" in err[0], err
    (tmp_path / "empty").mkdir()
    assert main(["compare", "--input", str(tmp_path / "empty"), "--model", "default:denoise",
                 "--html", str(tmp_path / "y.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input images in" in err[0] and not (tmp_path / "y.html").exists(), err


@pytest.mark.timeout(300)
def test_the_report_reads_summaries_written_by_earlier_versions(job: Path, tmp_path: Path) -> None:
    """``_summary.json`` reads back into the model and writes back byte for byte; one written
    before the newer keys existed (and holding a key this version does not know) still fills the
    page's details, with the default unchanged threshold; one that is not a summary is left out."""
    import json
    import shutil

    from restoration.pages.report import build_report
    from restoration.restore.manifest import MANIFEST_DIR, SUMMARY_FILE
    from restoration.restore.summary import RestoreSummary

    text = (job / MANIFEST_DIR / SUMMARY_FILE).read_text()
    summary = RestoreSummary.from_json(text)
    assert summary.to_json() == text and summary.stopped is None and summary.counts.ok == 10
    copy = tmp_path / "out"
    shutil.copytree(job / MANIFEST_DIR, copy / MANIFEST_DIR)  # the rows name the job's own images
    older = {key: value for key, value in json.loads(text).items()
             if key not in ("model", "unchanged", "unchanged_threshold", "pipeline_started_epoch", "executor", "stopped")}
    (copy / MANIFEST_DIR / SUMMARY_FILE).write_text(json.dumps({**older, "from_the_future": 1}))
    page, _ = build_report(str(copy), sample=1, extremes=0)
    assert "No _summary.json" not in page and summary.job_id in page and summary.model_id in page
    assert "unchanged (&lt; 0.5 levels)" in page and "weights_sha256" not in page
    (copy / MANIFEST_DIR / SUMMARY_FILE).write_text(json.dumps({"counts": {}}))
    page, _ = build_report(str(copy), sample=1, extremes=0)
    assert "No _summary.json" in page and summary.job_id not in page


@pytest.mark.timeout(300)
def test_the_compare_page_shows_every_model_and_flips_between_them(job: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Three models -- the job's tiny checkpoint, the shipped denoiser and a community x4 model
    (random weights) -- on a seeded sample degraded by a named case: the page holds the same crop
    for each, PSNR per model, and the flip switch cycles through the models' outputs."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    community = tmp_path / "compact-x4.pth"
    torch.save(Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4).state_dict(), community)
    page = tmp_path / "compare.html"
    models = [str(job.parent / "model"), "default:denoise", str(community)]
    args = ["compare", "--input", str(job.parent / "in"), "--sample", "3", "--case", "noise15-jpeg60", "--html", str(page)]
    assert main([*args, *[item for model in models for item in ("--model", model)]]) == 0
    said = capsys.readouterr().out
    assert all(f"{model}: " in said and "s/megapixel here" in said for model in models), said
    with Browser(tmp_path / "profile") as browser:
        browser.open(page)
        assert browser.broken_images() == [] and browser.errors == []
        names = browser.evaluate("Array.from(document.querySelectorAll('#models tbody tr')).map(r => r.children[0].textContent)")
        assert names == models
        psnr = browser.evaluate("Array.from(document.querySelectorAll('#models tbody tr')).map(r => r.children[6].textContent)")
        assert all(re.fullmatch(r"\d+\.\d\d", value) for value in psnr[:2]), psnr  # the x4 model cannot be scored here
        # 3 images (one of them the broken file, which is a line) x (input + 3 models + the flip frame)
        assert browser.evaluate("document.querySelectorAll('.pairs figure').length") >= 2 * 5
        shown = "document.querySelector('img.flippable').closest('figure').querySelector('.shown').textContent"
        first_src = browser.evaluate("document.querySelector('img.flippable').src")
        labels = [browser.evaluate(shown)]
        for _ in range(3):
            browser.evaluate("document.querySelector('button.flip').click()")
            labels.append(browser.evaluate(shown))
        assert labels == [models[0], models[1], models[2], models[0]], labels
        assert browser.evaluate("document.querySelector('img.flippable').src") == first_src
        browser.evaluate("document.querySelectorAll('#models th')[4].click()")  # sort by seconds / megapixel
        order = browser.evaluate("Array.from(document.querySelectorAll('#models tbody tr'))"
                                 ".map(r => parseFloat(r.children[4].dataset.value))")
        assert order == sorted(order)
        browser.screenshot((SCREENSHOTS or tmp_path) / "compare.png")


EVIL = "<script>window.pwned=1</script>"


def _assert_inert(browser: Browser, page: Path, *evil: str) -> None:
    """``page`` shows each ``evil`` string as text: no markup of it parsed, no script of it run."""
    browser.open(page)
    assert browser.errors == [] and browser.broken_images() == [], browser.errors
    assert browser.evaluate("typeof window.pwned") == "undefined"
    assert browser.evaluate("document.scripts.length") == 1  # the page's own
    assert browser.evaluate("document.querySelectorAll('img:not([src^=\\'data:\\'])').length") == 0
    shown = browser.evaluate("document.body.innerText")
    for text in evil:
        assert text in shown, (text, shown[:2000])


@pytest.mark.timeout(300)
def test_markup_in_names_and_errors_is_shown_as_text(tmp_path: Path) -> None:
    """File names, model names and error messages that hold HTML reach the pages escaped: the
    report of a job whose inputs are named like markup (one decodes, one does not), and the
    comparison page of models named and failing like markup."""
    from restoration.pages.compare import ModelResult, comparison_page
    from restoration.pages.report import write_report

    image = Image.new("RGB", (40, 30), (200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    good, bad = "<img src=x onerror=window.pwned=2>.png", "<script>window.pwned=3<.png"
    out = make_job(tmp_path, count=1, extra={good: buffer.getvalue(), bad: b"not an image"})
    page = tmp_path / "report.html"
    write_report(str(out), str(page), sample=4, extremes=0)
    text = page.read_text()
    assert "<script>window" not in text and "<img src=x" not in text and "&lt;script&gt;window.pwned=3" in text

    pixels = np.full((32, 32, 3), 90, np.uint8)
    result = ModelResult(spec=EVIL, model_id="m", architecture="<b>arch</b>", outputs={"a.png": pixels},
                         seconds=1.0, megapixels=0.001, changes=[1.0])
    failed = ModelResult(spec="<i>second</i>", error=f"cannot load {EVIL}")
    report = {"input": f"/data/{EVIL}", "inputs": 3, "seed": 0, "case": None, "reference": f"refs/{EVIL}",
              "results": [result, failed], "collection_megapixels": 1.5, "counted": f"headers of {EVIL}",
              "sample": {"a.png": {"input": pixels}, f"{EVIL}.png": {"error": f"corrupt {EVIL}"}}}
    compared = tmp_path / "compare.html"
    compared.write_text(comparison_page(report), encoding="utf-8")
    assert EVIL not in compared.read_text()
    with Browser(tmp_path / "profile") as browser:
        _assert_inert(browser, page, good, bad)
        _assert_inert(browser, compared, f"Model comparison: /data/{EVIL}", f"cannot load {EVIL}", "<b>arch</b>",
                      f"{EVIL}.png: cannot be read: corrupt {EVIL}", f"refs/{EVIL}", f"headers of {EVIL}")
        labels = browser.evaluate("JSON.parse(document.querySelector('img.flippable').dataset.labels)")
        assert labels == [EVIL]


def make_measured_output(root: Path, *, routed: bool = True, version: int = 3) -> Path:
    """An output folder as a routed restore run leaves it, without running a model: photo crops
    (noisy PNGs, JPEGs at known qualities, a gray photo stored as RGB, a blurred one, a broken
    file), their outputs, and the manifest rows with the inputs' measures and routes, written by
    :class:`ManifestWriter` (``version=2``: one Parquet file of the version before the measures,
    as an older run wrote it); with ``routed``, a ``_summary.json`` of task ``route``. Returns
    the output folder."""
    import datetime as dt

    import pyarrow.parquet as pq
    from PIL import ImageFilter
    from skimage import data

    from restoration.restore import manifest as manifest_lib
    from restoration.restore.summary import Counts, ModelRecord, RestoreSummary

    rng = np.random.default_rng(0)
    inputs, out = root / "in", root / "out"
    inputs.mkdir(parents=True)
    out.mkdir()
    # name: (photo, added noise sigma, JPEG quality or None, blurred, measured noise, blockiness, blur, route, reason)
    images = {
        "astronaut.png": ("astronaut", 25, None, False, 24.6, 1.01, 0.12, "denoise", "rule 3: noise_sigma >= 4 (noise_sigma=24.6)"),
        "chelsea.png": ("chelsea", 8, None, False, 8.1, 1.0, 0.2, "denoise", "rule 3: noise_sigma >= 4 (noise_sigma=8.1)"),
        "coffee.jpg": ("coffee", 0, 30, False, 2.5, 1.9, 0.31, "jpeg", "rule 1: jpeg_quality < 90 (jpeg_quality=30)"),
        "rocket.jpg": ("rocket", 0, 60, False, 1.7, 1.4, 0.25, "jpeg", "rule 1: jpeg_quality < 90 (jpeg_quality=60)"),
        "moon.jpg": ("moon", 0, 95, False, 1.2, 1.02, 0.45, "skip", "no rule holds"),
        "camera.png": ("camera", 0, None, False, 0.8, 1.0, 0.15, "skip", "no rule holds"),
        "coins.png": ("coins", 0, None, True, 0.5, 1.0, 0.74, "skip", "no rule holds"),
    }
    job_id = manifest_lib.new_job_id()
    now = dt.datetime.now(dt.UTC)
    rows = []
    for name, (photo, sigma, quality, blurred, noise, blockiness, blur, route, reason) in images.items():
        pixels = getattr(data, photo)()[:64, :80]
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=2)  # a gray photo stored as RGB
        pil = Image.fromarray(np.clip(pixels + rng.normal(0, sigma, pixels.shape), 0, 255).astype(np.uint8))
        if blurred:
            pil = pil.filter(ImageFilter.GaussianBlur(3))
        source = inputs / name
        if quality is not None:
            pil.save(source, format="JPEG", quality=quality)
        else:
            pil.save(source, format="PNG")
        output = out / (Path(name).stem + ".png")
        restored = pil if route == "skip" else pil.filter(ImageFilter.SMOOTH)
        restored.save(output, format="PNG")
        rows.append({"source_uri": str(source), "output_uri": str(output), "status": "ok", "task": "route",
                     "model_id": "route-auto", "job_id": job_id, "width": 80, "height": 64, "out_width": 80,
                     "out_height": 64, "format": "JPEG" if quality else "PNG", "bytes_in": source.stat().st_size,
                     "seconds": 0.01, "mean_abs_change": 0.0 if route == "skip" else 2.0, "restored_at": now,
                     "noise_sigma": noise, "jpeg_quality": quality, "blockiness": blockiness, "blur": blur,
                     "gray_rgb": photo == "camera", "route": route, "route_reason": reason})
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a PNG")
    rows.append(manifest_lib.error_row(str(inputs / "broken.png"), "cannot decode: truncated", "decode", job_id=job_id))
    rows.append(manifest_lib.error_row(str(inputs / "failed.png"), "out of memory", "restore", job_id=job_id,
                                       width=80, height=64, noise_sigma=12.0, blockiness=1.0, blur=0.5,
                                       gray_rgb=False, route="denoise",
                                       route_reason="rule 3: noise_sigma >= 4 (noise_sigma=12.0)"))
    if version == 2:
        added = [field.name for field in manifest_lib.ASSESSMENT_FIELDS] + ["route", "route_reason"]
        table = manifest_lib.rows_to_table(rows).drop_columns(added)
        table = table.replace_schema_metadata({key: b"2" for key in manifest_lib.MANIFEST_SCHEMA.metadata})
        (out / manifest_lib.MANIFEST_DIR).mkdir()
        pq.write_table(table, out / manifest_lib.MANIFEST_DIR / f"{job_id}-manifest.parquet")
    else:
        writer = manifest_lib.ManifestWriter(str(out), job_id)
        writer.add_rows(rows)
        writer.close()
    if routed:
        def record(model_id: str, licence: str) -> ModelRecord:
            return ModelRecord(model_id=model_id, architecture="fused", scale=1, weights_sha256="0" * 64,
                               licence=licence, source="shipped")

        models = {"jpeg": record("jpeg-v1", "Apache-2.0"), "denoise": record("denoise-v1", "MIT"),
                  "drunet": record("drunet-color", "<b>CC-BY</b>")}
        summary = RestoreSummary(
            job_id=job_id, task="route", model_id="route-auto", input=str(inputs), output=str(out), inputs=9,
            counts=Counts(ok=7, error=2, skipped=0), duplicates_dropped=0, images_per_second=10.0, megapixels=0.04,
            megapixels_per_second=0.4, wall_seconds=0.9, pipeline_seconds=0.8, started_at="2025-01-01T00:00:00Z",
            manifest=str(out / manifest_lib.MANIFEST_DIR), actor_pool=None, config={},
            model=ModelRecord(model_id="route-auto", architecture="route", scale=1, weights_sha256="1" * 64,
                              licence="Apache-2.0 + MIT", source="route auto: jpeg, denoise, drunet"),
            models=models)
        (out / manifest_lib.MANIFEST_DIR / manifest_lib.SUMMARY_FILE).write_text(summary.to_json())
    return out


def _histograms(page: str) -> dict[str, list[tuple[str, int]]]:
    """The page's histograms: title -> [(bin, count)] from the bars' tooltips."""
    import html

    found = {}
    for title, body in re.findall(r'<svg[^>]*aria-label="([^"]+)">(.*?)</svg>', page, flags=re.DOTALL):
        measure = html.unescape(title).split(":")[0]
        bars = re.findall(r'<g class="bar"><title>([^<]*): (\d+) inputs?</title>', body)
        found[html.unescape(title)] = [(html.unescape(label).removeprefix(f"{measure} "), int(count))
                                       for label, count in bars]
    return found


@pytest.mark.timeout(120)
def test_the_report_shows_what_the_images_needed_and_their_routes(tmp_path: Path) -> None:
    """A routed run's page: histograms of noise, JPEG quality (JPEG inputs only), blockiness and
    blur over every measured input (an input that failed after it was measured too), the count
    of gray inputs stored as RGB, the images at each extreme with their measures, and the routes
    with their models, licences, counts and reasons; a manifest written before the measures
    builds the same page without that section."""
    import html

    from restoration.pages.report import build_report

    out = make_measured_output(tmp_path / "routed")
    page, stats = build_report(str(out), sample=2, extremes=2)
    assert "What the images needed" in page and "Traceback" not in page
    histograms = _histograms(page)
    assert set(histograms) == {"noise level: 8 inputs", "JPEG quality: 3 inputs", "blockiness: 8 inputs",
                               "blur: 8 inputs"}, histograms
    noise = dict(histograms["noise level: 8 inputs"])
    assert noise == {"< 2": 4, "2-4": 1, "4-8": 0, "8-15": 2, "15-25": 1, "25-50": 0, ">= 50": 0}, noise
    assert dict(histograms["JPEG quality: 3 inputs"]) == {"< 50": 1, "50-69": 1, "70-79": 0, "80-89": 0,
                                                           "90-94": 0, "95-100": 1}
    assert all(sum(count for _, count in bars) == int(title.split(": ")[1].split()[0])
               for title, bars in histograms.items())
    assert "estimated noise sigma, 8-bit levels (0-255)" in page  # the axis, with its unit
    assert "JPEG inputs only; 5 of the 8 inputs measured are not JPEG" in page
    cards = {label: value for value, label in re.findall(r'<div class="card"><b>([^<]*)</b>([^<]*)</div>', page)}
    assert cards["inputs measured"] == "8" and cards["gray stored as RGB"] == "1", cards
    assert cards["inputs routed"] == "8" and cards["written unchanged (route skip)"] == "3", cards

    table = page[page.index('<table id="routes">'):]
    table = table[:table.index("</table>")]
    routes = [[html.unescape(re.sub(r"<[^>]+>", " ", cell)).split() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
              for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.DOTALL)]
    assert [(cells[0][0], cells[1][0], cells[2][0]) for cells in routes] == [
        ("denoise", "3", "37.5%"), ("skip", "3", "37.5%"), ("jpeg", "2", "25.0%"), ("drunet", "0", "0.0%")], routes
    denoise, skip, jpeg, drunet = (" ".join(" ".join(cell) for cell in cells) for cells in routes)
    assert "denoise-v1 (fused) MIT rule 3: noise_sigma >= 4: 3, e.g. noise_sigma=24.6; noise_sigma=8.1" in denoise
    assert "none: written unchanged" in skip and "no rule holds: 3" in skip
    assert "jpeg-v1 (fused) Apache-2.0 rule 1: jpeg_quality < 90: 2, e.g. jpeg_quality=30; jpeg_quality=60" in jpeg
    assert "drunet-color" in drunet and "&lt;b&gt;CC-BY&lt;/b&gt;" in table  # escaped

    def section(title: str) -> list[str]:
        part = page[page.index(f"<h3>{title}</h3>"):]
        part = part[:part.index("</div>\n")]
        return [html.unescape(caption) for caption in re.findall(r"<figcaption>(.*?)</figcaption>", part)]

    noisiest = section("The noisiest")
    assert len(noisiest) == 2 and "astronaut.png" in noisiest[0] and "chelsea.png" in noisiest[1], noisiest
    assert "noise sigma 24.6, blockiness 1.01, blur 0.12, route denoise" in noisiest[0]
    lowest = section("The lowest JPEG quality")
    assert "coffee.jpg" in lowest[0] and "JPEG quality 30" in lowest[0] and "rocket.jpg" in lowest[1], lowest
    assert "coffee.jpg" in section("The blockiest")[0]
    assert [name in caption for name, caption in zip(("coins.png", "moon.jpg"), section("The blurriest"))] == [True] * 2
    # The sample, the most and the least changed and 4 x 2 extremes: 14 pairs of 7 inputs, each read once.
    assert page.count('<figure><div class="row">') == 2 + 2 * 2 + 4 * 2 and stats.images_read <= 7
    assert "cannot be shown" not in page and page.count("<svg") == 1 + 4
    shown = tmp_path / "routed.html"
    shown.write_text(page, encoding="utf-8")
    with Browser(tmp_path / "profile") as browser:  # the histograms render, their bin labels side by side
        browser.open(shown)
        assert browser.errors == [] and browser.broken_images() == []
        overlaps = browser.evaluate("""Array.from(document.querySelectorAll('.histograms svg')).map(svg => {
            const boxes = Array.from(svg.querySelectorAll('g.bar')).map(g => g.lastElementChild.getBBox());
            return boxes.slice(1).filter((box, i) => boxes[i].x + boxes[i].width > box.x).length; })""")
        assert overlaps == [0, 0, 0, 0], overlaps
        heights = "Array.from(document.querySelectorAll('.histograms svg')[0].querySelectorAll('g.bar rect')).map(r => r.getBBox().height)"
        assert [height > 0 for height in browser.evaluate(heights)] == [True, True, False, True, True, False, False]

    old = make_measured_output(tmp_path / "old", routed=False, version=2)
    page, _ = build_report(str(old), sample=2, extremes=2)
    assert "What the images needed" not in page and page.count("<svg") == 1  # the throughput plot only
    assert 'id="routes"' not in page and "noise sigma" not in page and "The noisiest" not in page
    assert page.count('<figure><div class="row">') == 2 + 2 * 2  # the pairs as before

"""The web page results/index.html: its content, and the page in a real (headless Chromium) browser."""

from __future__ import annotations

import html
import os
import re
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from record_factory import make_record, write_record

from digitsum_bench.claims import CLAIM_NAMES
from digitsum_bench.registry.recipes import get_recipe, list_recipes
from digitsum_bench.reporting import page as page_module
from digitsum_bench.reporting import report

# as the registry stores them: every MSE claim of the reports is of the raw output ("mse_raw")
CLAIMS = [{"metric": "exact", "value": 0.9492, "split": "val", "note": ""},
          {"metric": "mse_raw", "value": 0.264, "split": "val", "note": "of the raw output"}]  # fmt: skip
# full budget: three recipes, GFLOPs in another order than accuracy; B has 2 of 3 seeds
FULL = {"r002_attention_cnn": (0.30, 0.5), "r002_resnet50": (0.90, 4.1), "r003_convnet4": (0.10, 0.06)}
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A results folder with its report written: (folder, index.html text)."""
    results = tmp_path_factory.mktemp("results")
    for recipe, (exact, gflops) in FULL.items():
        seeds = (0, 1) if recipe == "r002_resnet50" else (0, 1, 2)
        for seed in seeds:
            write_record(results, make_record(recipe, seed, test=exact + 0.01 * seed, gflops=gflops,
                                              claimed=CLAIMS if recipe == "r002_resnet50" else []))  # fmt: skip
    # quick budget: two recipes on two devices make two tables
    write_record(results, make_record("r003_convnet4", 0, budget="quick", test=0.1, seeds_requested=(0,)))
    write_record(results, make_record("r002_attention_cnn", 0, budget="quick", test=0.2, seeds_requested=(0,),
                                      device="NVIDIA H100 80GB HBM3"))  # fmt: skip
    paths = report.write_report(results)
    assert results / "index.html" in paths
    return results, (results / "index.html").read_text(encoding="utf-8")


def test_page_is_self_contained(page):
    results, text = page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # no CDN, no network
    assert "<script src" not in text and "<link" not in text
    for link in re.findall(r'href="([^"#]+)"', text):
        assert (results / link).exists(), link  # relative links point at files the report wrote
    assert text.count('src="data:image/png;base64,') == 2  # one accuracy-vs-GFLOPs plot per table


def test_one_table_per_budget_dataset_with_device_column_and_claims_beside_measurements(page):
    _, text = page
    tables = re.findall(r"<section class=\"board\".*?</section>", text, flags=re.S)
    assert len(tables) == 2  # full, quick: one table per dataset and budget, whatever the device
    quick = tables[1]
    devices = dict(re.findall(r'<tr data-recipe="(\w+)">.*?<td data-v="(cpu|NVIDIA H100 80GB HBM3)"', quick))
    assert devices == {"r002_attention_cnn": "NVIDIA H100 80GB HBM3", "r003_convnet4": "cpu"}
    full = tables[0]
    headers = re.findall(r"<th data-type[^>]*>([^<]*)</th>", full)
    for measured, claimed in [("val exact % (95% CI)", "claim: val exact"), ("val MSE raw", "claim: val MSE raw")]:
        assert headers.index(claimed) == headers.index(measured) + 1
    assert "MSE (rounded)" in headers and "MAE" in headers and "epochs" in headers and "to 50%" in headers
    assert "claim: val MAE" not in headers and "claim: val MSE (rounded)" not in headers  # no row claims them
    row_b = re.search(r'<tr data-recipe="r002_resnet50">.*?</tr>', full).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row_b)
    assert cells[headers.index("claim: val exact")].startswith("claim: 94.92%")
    assert "course data" in cells[headers.index("claim: val exact")]
    assert cells[headers.index("claim: val MSE raw")].startswith("claim: 0.264")
    assert 'title="of the raw output"' in row_b  # the claim's note, as a tooltip
    assert cells[headers.index("exact % (95% CI)")].startswith("90.5 ±")  # measured: mean of .90 and .91
    assert cells[headers.index("seeds done/asked")].startswith("2/3")
    assert f'id="{page_module._id("t0", "r002_resnet50")}"' in full
    assert "Assumptions" in full and "<svg" in full and "e17efc0" in full


def test_check_only_budget_is_not_on_the_page(tmp_path):
    """A smoke run proves only that the code runs: no table of it on the page, so no rank and no `vs best`."""
    write_record(tmp_path, make_record("r003_convnet4", 0, test=0.1))
    for recipe, exact in [("r003_convnet4", 0.1), ("r002_attention_cnn", 0.2)]:
        write_record(tmp_path, make_record(recipe, 0, budget="smoke", test=exact, seeds_requested=(0,)))
    report.write_report(tmp_path)
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    tables = re.findall(r'<section class="board".*?</section>', text, flags=re.S)
    assert len(tables) == 1 and "budget <code>full</code>" in tables[0]
    assert "budget <code>smoke</code>" not in text


def _cells(row_html: str) -> list[str]:
    """A table row's cells as plain text."""
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html)]


@pytest.fixture(scope="module")
def registry_report(tmp_path_factory):
    """One full-budget record per registered recipe, each with the registry's own claims: (page, markdown)."""
    results = tmp_path_factory.mktemp("registry")
    for rank, name in enumerate(list_recipes()):
        claimed = [asdict(c) for c in get_recipe(name).claimed]
        write_record(results, make_record(name, 0, test=0.9 - 0.01 * rank, seeds_requested=(0,), claimed=claimed))
    report.write_report(results)
    return (results / "index.html").read_text(encoding="utf-8"), (results / "leaderboard.md").read_text()


def test_page_shows_every_claim_the_markdown_shows(registry_report):
    """The registry's real claims, MSE claims ("mse_raw") included, are in both tables, beside the same metric."""
    page, markdown = registry_report
    headers = re.findall(r"<th data-type[^>]*>([^<]*)</th>", page)
    md_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    md_headers = [c.strip() for c in md_lines[0].strip("|").split("|")]
    shown = 0
    for name in list_recipes():
        page_row = _cells(re.search(rf'<tr data-recipe="{name}">.*?</tr>', page).group(0))
        md_row = [c.strip() for c in next(line for line in md_lines if f"| `{name}` |" in line).strip("|").split("|")]
        for metric, label in CLAIM_NAMES.items():
            for split in ("val", "test"):
                header = f"claim: {split} {label}"
                md_cell = md_row[md_headers.index(header)] if header in md_headers else "—"
                page_cell = page_row[headers.index(header)] if header in headers else "—"
                assert (md_cell == "—") == (page_cell == "—"), (name, metric, md_cell, page_cell)
                for claim in (c for c in get_recipe(name).claimed if c.metric == metric and c.split == split):
                    assert claim.split in md_cell and claim.split in page_cell, (name, metric)
                    shown += 1
    assert shown == sum(len(get_recipe(name).claimed) for name in list_recipes())
    r004 = _cells(re.search(r'<tr data-recipe="r004_multilabel_transfer">.*?</tr>', page).group(0))
    assert r004[headers.index("claim: val MSE raw")].startswith("claim: 1 (val, course data)")


def _chromium() -> str | None:
    return os.environ.get("DIGITSUM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip():
    """Playwright driving the system's Chromium (nothing downloaded); a skip with the reason where there is none.

    CI sets DIGITSUM_REQUIRE_BROWSER=1: there a missing browser fails instead of skipping.
    """
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and _chromium() is None:
        reason = "no Chromium on PATH (apt-get install chromium, or set DIGITSUM_CHROMIUM)"
    if reason:
        if os.environ.get("DIGITSUM_REQUIRE_BROWSER"):
            pytest.fail(f"browser test required but {reason}")
        pytest.skip(reason)
    return sync_playwright


def test_page_in_a_browser(page, tmp_path):
    sync_playwright = _browser_or_skip()
    results, _ = page
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=BROWSER_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto((results / "index.html").as_uri())
            table = tab.locator("table.sortable").first
            order = lambda: [r for r in table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.recipe)")
                             if r in FULL]  # noqa: E731 - the registry's recipes not run yet are rows too

            # one row per recipe, best first
            assert order() == sorted(FULL, key=lambda r: -FULL[r][0])
            # sort by GFLOPs: ascending, then descending on a second click
            header = table.locator("thead th", has_text="GFLOPs")
            header.click()
            assert order() == sorted(FULL, key=lambda r: FULL[r][1])
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            assert order() == sorted(FULL, key=lambda r: -FULL[r][1])
            # a text column sorts by text
            table.locator("thead th", has_text="recipe").first.click()
            assert order() == sorted(FULL)

            # the detail view opens from the recipe's name
            detail = tab.locator("#" + page_module._id("t0", "r002_resnet50"))
            assert not detail.locator(".panes").is_visible()
            table.get_by_role("button", name="r002_resnet50", exact=True).click()
            assert detail.locator(".panes").is_visible()
            assert detail.locator("svg.chart").count() == 2  # training curves and per-sum accuracy
            assert detail.locator("h4", has_text="Provenance").is_visible()
            assert "0.001" in detail.locator("table.kv").first.inner_text()  # the config's lr

            shot = tmp_path / "page.png"
            tab.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[0] > 900 and pixels.std() > 10  # not blank: text, tables and plots drawn
    assert len(np.unique(pixels)) > 50


def test_every_table_fits_a_1400_px_window_until_all_columns_are_asked_for(page):
    """At 1400x900 no table needs a horizontal scroll bar: measured rows first, a not-run row in a short cell,
    the compared columns shown; the toggle shows every column (wider) and hides them again."""
    sync_playwright = _browser_or_skip()
    results, text = page
    full = re.search(r'<section class="board".*?</section>', text, flags=re.S).group(0)
    recipes = re.findall(r'<tr data-recipe="(\w+)">', full)
    assert recipes[: len(FULL)] == sorted(FULL, key=lambda r: -FULL[r][0]) and len(recipes) == len(list_recipes())
    not_run = re.search(r'<td data-v="" class="not-run" title="not run: ([^"]*)">(not run · [^<]*)</td>', full)
    assert not_run and len(not_run.group(2)) < 50  # the cell is short, the tooltip and detail view say it all
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=BROWSER_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.goto((results / "index.html").as_uri())
            widths = lambda: tab.evaluate(  # noqa: E731
                "() => Array.from(document.querySelectorAll('table.sortable'), t => t.getBoundingClientRect().width)")
            window = tab.evaluate("() => document.documentElement.clientWidth")
            assert len(widths()) == 2 and max(widths()) <= window, (widths(), window)
            headers = tab.locator("table.sortable").first.locator("thead th:visible").all_inner_texts()
            for compared in ("recipe", "exact % (95% CI)", "claim: exact", "claim vs measured", "within-one %",
                             "MSE raw", "GFLOPs", "train time", "seeds done/asked"):
                assert compared in [h.replace("\n", " ") for h in headers], (compared, headers)
            assert "MAE" not in headers and "params (M)" not in headers
            toggle = tab.locator("button.columns").first
            toggle.click()
            assert widths()[0] > window and tab.locator("table.sortable").first.locator("th", has_text="MAE").is_visible()
            toggle.click()
            assert max(widths()) <= window
            # a recipe not run opens a detail view that says what a seed would cost on every device
            tab.get_by_role("button", name="r000_seresnet", exact=True).first.click()
            assert "What a seed would cost" in tab.locator("details[open]").first.inner_text()
        finally:
            browser.close()


# A string that breaks out of an attribute (either quote), opens a tag, and runs script on focus or error;
# no slash, so that it can be a folder name too (recipe, budget and dataset id are).
HOSTILE = """x" onfocus="window.__pwned=1" autofocus tabindex="1' onmouseover='window.__pwned=1' \
<img src=x onerror="window.__pwned=1"><svg onload=window.__pwned=1>"""
HOSTILE_TEXT = HOSTILE + "</script><script>window.__pwned=1</script><!--"  # for fields that are not folder names


def _hostile_record(seed: int) -> dict:
    """A record whose every string field is hostile (its names excepted, which schema.RECORD keeps to their own
    alphabet, and the ones that must parse as what they are)."""
    record = make_record("r003_convnet4", seed, budget="quick", dataset_id="synth-hostile", seeds_requested=(0, 1))
    record.update(report=HOSTILE_TEXT, method=HOSTILE_TEXT, dataset=HOSTILE_TEXT, device=HOSTILE_TEXT,
                  git_commit=HOSTILE_TEXT, pretrained=HOSTILE_TEXT,
                  versions={"torch": HOSTILE_TEXT, HOSTILE_TEXT: HOSTILE_TEXT},
                  claimed=[{"metric": "exact", "value": 0.5, "split": "val", "note": HOSTILE_TEXT},
                           {"metric": "mae", "value": None, "split": "test", "note": HOSTILE_TEXT}],
                  config={"name": HOSTILE_TEXT, "epochs": 3, HOSTILE_TEXT: HOSTILE_TEXT,
                          "assumptions": [HOSTILE_TEXT], "lr": HOSTILE_TEXT})  # fmt: skip
    return record


def test_hostile_strings_run_no_script_in_a_browser(tmp_path):
    """Every string of a record reaches the page escaped, attributes included: opening the page, focusing,
    hovering and clicking everything runs none of the records' script."""
    sync_playwright = _browser_or_skip()
    for seed in (0, 1):
        write_record(tmp_path, _hostile_record(seed))
    write_record(tmp_path, make_record("r002_attention_cnn", 0, claimed=CLAIMS))
    report.write_report(tmp_path)
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "window.__pwned" in text  # the strings are on the page (escaped), not dropped
    assert 'id="t' in text and f'id="t0-{HOSTILE}' not in text  # ids are derived, never the raw name
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=BROWSER_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            dialogs = []
            tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            tab.goto((tmp_path / "index.html").as_uri())
            for button in tab.locator("button.columns").all() + tab.locator("button.open").all():
                button.click()  # every column shown, every detail view open
            for _ in range(30):
                tab.keyboard.press("Tab")
            for cell in tab.locator("td, th, summary, li, code").all()[:400]:
                cell.hover(timeout=2000, force=True)
            tab.goto((tmp_path / "index.html").as_uri() + "#" + HOSTILE)  # a hash naming the raw recipe
            assert tab.evaluate("() => window.__pwned") is None
            assert not dialogs
        finally:
            browser.close()

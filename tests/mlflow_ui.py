"""Drives the MLflow UI (3.17) in Debian's chromium through Playwright: the pages a user opens after a run or a sweep.

Used by tests/test_mlflow_ui.py, and run as a script to take the README's screenshots from a real run:

    python -m tests.mlflow_ui http://127.0.0.1:5000 docs/images --run-name dcgan-... --sweep-name my-sweep
"""
from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling Google's hosts, which this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


@contextlib.contextmanager
def browser_page(width: int = 1500, height: int = 950):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def _close_assistant(page) -> None:
    """The MLflow Assistant panel opens beside every page on first visit and hides half of it."""
    close = page.get_by_role("button", name="Close", exact=True)
    with contextlib.suppress(Exception):
        close.click(timeout=5_000)


def open_runs_table(page, base_url: str, experiment_id: str, parent_name: str, columns: tuple[str, ...]) -> None:
    """The experiment's runs table with the sweep's parent expanded and these param/metric columns shown."""
    page.goto(f"{base_url}/#/experiments/{experiment_id}/runs")
    page.get_by_text(parent_name, exact=True).wait_for()
    _close_assistant(page)
    parent_row = page.locator("[role=row]", has_text=parent_name)
    parent_row.locator("[col-id='attributes.`Run Name`'] button").click()  # the expand toggle of nested runs
    for name in columns:
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder("Search columns").fill(name)
        page.get_by_role("dialog").locator(".du-bois-light-tree-title").filter(
            has_text=re.compile(f"^{re.escape(name)}$")).first.click()
        page.keyboard.press("Escape")


def table_rows(page) -> dict[str, dict[str, str]]:
    """Run name -> {column id: cell text}, joining AG Grid's pinned and scrolling halves of each row.

    Column ids are AG Grid's, e.g. "params.`lr`" and "metrics.`quality/fid_domain`"."""
    by_index: dict[str, dict[str, str]] = {}
    for row in page.locator("[role=row][row-index]").all():
        cells = by_index.setdefault(row.get_attribute("row-index"), {})
        for cell in row.locator("[role=gridcell]").all():
            cells[cell.get_attribute("col-id")] = cell.inner_text().strip()
    # The run-name cell also holds the run's colour swatch text; the name is its last line.
    return {cells["attributes.`Run Name`"].splitlines()[-1]: cells for cells in by_index.values()}


def open_model_metrics(page, base_url: str, experiment_id: str, run_id: str, search: str = "") -> None:
    page.goto(f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
    page.get_by_placeholder("Search metric charts").wait_for()
    _close_assistant(page)
    if search:
        page.get_by_placeholder("Search metric charts").fill(search)


def chart_card(page, title: str):
    """One chart card of the run's metrics page, found by its title (the metric name after its prefix) and scrolled
    into view as a user would: MLflow renders a chart only once it is on screen, and a search can list more cards
    than fit (`samples` also finds data/skipped_samples and quality/floor_samples). The page re-lays out its cards
    while charts load, so a card found a moment ago may be replaced: look again until one stays put."""
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    cards.first.wait_for()  # the search is applied and the first charts are laid out: scroll only past those
    card = cards.filter(has=page.get_by_text(title, exact=True)).first
    page.mouse.move(page.viewport_size["width"] * 0.6, page.viewport_size["height"] * 0.6)  # over the charts pane
    for _ in range(40):
        if card.count():
            try:
                card.scroll_into_view_if_needed(timeout=3_000)
                return card
            except Exception:  # noqa: BLE001 - detached or still moving: the next look finds the new card
                pass
        else:
            page.mouse.wheel(0, 500)
        page.wait_for_timeout(250)
    card.scroll_into_view_if_needed()  # the last try raises Playwright's own error, naming the card
    return card


def plotted_line_count(card, timeout_ms: int = 20_000) -> int:
    """Plotly draws each series as a path inside the card's svg; 0 means the chart stayed empty for timeout_ms.

    A single count is not enough: Plotly lays out the svg before it draws the traces, and MLflow redraws a chart when
    its history arrives or its card moves, removing the lines for a moment. Under load a count landed in that moment
    (CI, stop 34; reproduced with three busy loops beside chromium: 2 of 20 looks), so look until lines show."""
    card.locator("svg.main-svg").first.wait_for()
    lines = card.locator("path.js-line")
    for _ in range(max(1, timeout_ms // 250)):
        if count := lines.count():
            return count
        card.page.wait_for_timeout(250)
    return lines.count()


def sample_grid(page):
    """The `samples` image chart: its image element and its step slider."""
    card = chart_card(page, "samples")
    image = card.locator("img[src*='get-artifact']").first
    image.wait_for()
    return card, image


def image_size(image) -> tuple[int, int]:
    """Natural size of a loaded image (0, 0 while it is loading or if it failed)."""
    image.page.wait_for_function("e => e.complete", arg=image.element_handle())
    return tuple(image.evaluate("e => [e.naturalWidth, e.naturalHeight]"))


def slide_to_last_step(page, card) -> None:
    slider = card.get_by_role("slider")
    track = slider.locator("xpath=../..")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)


def open_artifact(page, base_url: str, experiment_id: str, run_id: str, name: str):
    """The run's Artifacts tab with one file selected; returns its preview image."""
    page.goto(f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts")
    page.get_by_text(name, exact=True).wait_for()
    _close_assistant(page)
    page.get_by_text(name, exact=True).click()
    image = page.locator("img[src^='blob:']").first
    image.wait_for()
    return image


def main() -> None:
    """README screenshots: the run page with the sample-grid slider at its last epoch, and a sweep's summary."""
    from mlflow import MlflowClient

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("base_url")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--run-name", help="Ray run name (tag ray.run_name) of a training run (omit: no run page)")
    parser.add_argument("--sweep-name", required=True, help="Ray run name of a sweep's parent run")
    parser.add_argument("--columns", default="lr,latent_dim,quality/fid_domain",
                        help="param and metric columns of the sweep's runs table")
    parser.add_argument("--experiment", default="dcgan")
    args = parser.parse_args()
    client = MlflowClient(args.base_url)
    experiment_id = client.get_experiment_by_name(args.experiment).experiment_id

    def run_id(ray_name: str) -> str:
        return client.search_runs([experiment_id], f"tags.`ray.run_name` = '{ray_name}'")[0].info.run_id

    with browser_page(1400, 1250) as page:
        if args.run_name:
            open_model_metrics(page, args.base_url, experiment_id, run_id(args.run_name), search="samples")
            card, _ = sample_grid(page)
            card.locator("button").first.click()  # the card's full-screen view: a larger grid and a wider slider
            dialog = page.get_by_role("dialog")
            slide_to_last_step(page, dialog)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out_dir / "mlflow_run_samples.png"))
        sweep = client.get_run(run_id(args.sweep_name))
        page.set_viewport_size({"width": 1900, "height": 700})
        # Dataset, Source and Models are empty for these runs: toggled off, the settings and quality fit on screen.
        open_runs_table(page, args.base_url, experiment_id, sweep.info.run_name,
                        ("Dataset", "Source", "Models", *args.columns.split(",")))
        page.wait_for_timeout(1000)
        page.screenshot(path=str(args.out_dir / "mlflow_sweep_runs.png"))
        page.set_viewport_size({"width": 1400, "height": 1250})
        open_artifact(page, args.base_url, experiment_id, sweep.info.run_id, "summary.png")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(args.out_dir / "mlflow_sweep_summary.png"))

if __name__ == "__main__":
    main()

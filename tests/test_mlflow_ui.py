"""What a user browses in the MLflow UI after a run and a sweep, checked in a real chromium against a real
`mlflow server` over a store that a real tiny sweep wrote (its trials are real training runs).

Screenshots of every page land in test-artifacts/mlflow-ui/ (or $UI_SCREENSHOTS)."""
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gan.tracking.runs import ui_link
from tests.helpers import REPO
from tests.mlflow_ui import (CHROMIUM, browser_page, chart_card, image_size, open_artifact, open_model_metrics,
    open_runs_table, plotted_line_count, sample_grid, slide_to_last_step, table_rows)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} missing: scripts/test.sh installs Debian's chromium with apt")]

SHOTS = Path(os.environ.get("UI_SCREENSHOTS", REPO / "test-artifacts" / "mlflow-ui"))


@pytest.fixture(scope="module")
def ui(swept):
    """The tiny sweep's store (a parent and four trials, each a real training run), served by a real `mlflow server`
    on a free loopback port."""
    from tests.services import start_mlflow_server

    tracking = f"sqlite:///{swept / 'mlruns.db'}"
    server = start_mlflow_server(tracking, str(swept / "mlartifacts"), swept / "ui-server.log")
    SHOTS.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking)
    experiment_id = client.get_experiment_by_name("dcgan").experiment_id
    runs = client.search_runs([experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    yield {"url": server.url, "experiment_id": experiment_id, "client": client,
           "parent": next(r for r in runs if r.data.tags.get("job") == "sweep"), "children": children,
           # A trial that ran to its end: the run page a user opens after training.
           "train": next(r for r in children if r.data.tags.get("status") == "completed")}
    server.stop()


def test_the_link_a_job_prints_opens_the_model_training_view_not_the_genai_one(ui):
    experiment = ui["client"].get_experiment(ui["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    link = ui_link(ui["url"], ui["train"].info.run_id)  # what jobs.train prints for a server
    assert link.startswith(ui["url"]) and link.endswith("?workflowType=machine_learning")
    with browser_page() as page:
        # The experiment's page with the same view: MLflow 3.17.2 opens it in its GenAI overview otherwise (traces,
        # judges, "Agent versions"), whatever the tag says, unless the browser last chose Model training.
        page.goto(f"{ui['url']}/#/experiments/{ui['experiment_id']}?workflowType=machine_learning")
        page.get_by_text(ui["parent"].info.run_name, exact=True).wait_for()  # lands on the runs table
        page.screenshot(path=str(SHOTS / "experiment_landing.png"))
        genai = [text for text in ("Agent versions", "Judges", "Prompts") if page.get_by_text(text, exact=True).count()]
        assert "/runs" in page.url and not genai, (page.url, genai)
        page.goto(link)
        page.get_by_text("Model metrics", exact=True).first.wait_for()  # the run's own page, same view


def test_experiment_page_lists_the_sweep_and_its_trials_with_lr_and_latent_size(ui):
    with browser_page() as page:
        open_runs_table(page, ui["url"], ui["experiment_id"], ui["parent"].info.run_name, ("lr", "latent_dim"))
        page.get_by_text(ui["children"][0].info.run_name, exact=True).wait_for()
        page.screenshot(path=str(SHOTS / "experiment_runs.png"))
        rows = table_rows(page)
    assert ui["parent"].info.run_name in rows
    for child in ui["children"]:
        cells = rows[child.info.run_name]  # run names say what they are, e.g. "lr=2.0e-03 nz=16"
        assert float(cells["params.`lr`"]) == float(child.data.params["lr"])
        assert cells["params.`latent_dim`"] == child.data.params["latent_dim"] == "16"
        assert f"nz={child.data.params['latent_dim']}" in child.info.run_name
    assert len(ui["children"]) == 4


@pytest.mark.parametrize("prefix, titles", [("loss/", ("D", "G")), ("quality/", ("fid_domain", "precision"))])
def test_run_page_draws_the_loss_and_quality_charts(ui, prefix, titles):
    with browser_page() as page:
        for title in titles:
            # Searched by full name, as a user looking for one chart would: a handful of cards, all on screen.
            open_model_metrics(page, ui["url"], ui["experiment_id"], ui["train"].info.run_id, search=prefix + title)
            assert plotted_line_count(chart_card(page, title)) > 0, f"{prefix}{title} has no plotted line"
            page.screenshot(path=str(SHOTS / f"run_{prefix.strip('/')}_{title}.png"))


def test_sample_grid_series_loads_and_its_slider_reaches_the_last_epoch(ui):
    with browser_page() as page:
        open_model_metrics(page, ui["url"], ui["experiment_id"], ui["train"].info.run_id, search="samples")
        card, image = sample_grid(page)
        width, height = image_size(image)  # MLflow's thumbnail of the grid, 274 px wide
        # The digits are labelled, so the run is conditional: a row per digit, 10 rows of 8 (a square 8 x 8 without).
        rows = 10 if ui["train"].data.params["conditional"] == "True" else 8
        assert width > 0 and abs(width / height - 8 / rows) < 0.02, (width, height)
        assert "step%2B0" in image.get_attribute("src")  # the grid before training
        slide_to_last_step(page, card)
        last = f"step%2B{int(ui['train'].data.metrics['tick'])}%2B"  # the grid of the run's last tick (epoch here)
        page.wait_for_function(f"() => [...document.images].some(i => i.src.includes('{last}') && i.complete)")
        _, image = sample_grid(page)
        assert last in image.get_attribute("src") and image_size(image) == (width, height)
        page.screenshot(path=str(SHOTS / "run_samples.png"))


def test_parent_run_has_a_description_and_its_summary_plot_renders(ui):
    with browser_page() as page:
        page.goto(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs/{ui['parent'].info.run_id}")
        page.get_by_text("Ray Tune sweep, a grid search over lr", exact=False).wait_for()
        page.screenshot(path=str(SHOTS / "sweep_overview.png"))
        image = open_artifact(page, ui["url"], ui["experiment_id"], ui["parent"].info.run_id, "summary.png")
        assert image_size(image) == (1500, 400)  # three panels: lr, latent size and the --search field beta1
        page.screenshot(path=str(SHOTS / "sweep_summary.png"))

"""The explorer's worker through its public API, without widgets: a change of settings starts a new run
from the current image, a weight change recomputes no targets, a stale run stops, errors are reported."""

from __future__ import annotations

import sys

import pytest

from nstlib.checks import validate
from nstlib.core.settings import DEFAULT_STYLE_WEIGHT, Settings
from nstlib.course.worker import ExplorerWorker


@pytest.fixture
def worker(vgg, content, style):
    made = []

    def build(styles=style, autostart=True, **changes) -> ExplorerWorker:
        w = ExplorerWorker(content, styles, validate(Settings(steps=3, **changes)), runtime="cpu",
                           network=vgg, preview_size=32, render_steps=4,
                           frame_every=1, debounce=0.0, autostart=autostart)
        made.append(w)
        w.start()
        return w

    yield build
    for w in made:
        w.close()
        assert not w._thread.is_alive()


def test_the_worker_needs_no_widgets() -> None:
    assert "ipywidgets" not in sys.modules or "nstlib.course.widgets" in sys.modules  # nothing here imports them
    import nstlib.course.worker

    assert "ipywidgets" not in nstlib.course.worker.__dict__


def test_a_weight_change_is_a_new_run_from_the_current_image_on_the_same_targets(worker) -> None:
    w = worker()
    frames = []
    w.on_image = frames.append
    assert w.wait()
    assert [h["step"] for h in w.history] == [1, 2, 3] and len(w.targets) == 1
    targets = next(iter(w.targets.values()))
    w.update(w.settings.replace(style_weight=500.0))
    assert w.wait()
    assert [r["style_weight"] for r in w.runs] == [DEFAULT_STYLE_WEIGHT, 500.0]
    assert next(iter(w.targets.values())) is targets and len(w.targets) == 1  # nothing recomputed
    second = [h for h in w.history if h["run"] == 1]
    assert second[0]["content"] > 0 and all(h["style_weight"] == 500.0 for h in second)
    assert frames and frames[-1].shape == w.image.shape


def test_pause_stops_and_render_runs_full_size(worker) -> None:
    w = worker(autostart=False)
    statuses = []
    w.on_status = lambda text, error: statuses.append((text, error))
    w.update(render=True)
    assert w.wait()
    assert w.runs == [] and w.result is not None and w.result.image.shape == (1, 3, 64, 64)
    assert w.result.history[-1]["step"] == 4  # render_steps, at the full size
    w.update(active=True)
    assert w.wait() and len(w.runs) == 1
    w.update(w.settings.replace(blend_weights=[0.0]))  # sums to 0: reported, the worker survives
    assert w.wait()
    assert statuses[-1][1] and "blend_weights" in statuses[-1][0]
    w.update(w.settings.replace(blend_weights=[1.0]))
    assert w.wait() and not statuses[-1][1]


def test_a_failing_hook_is_logged_once_and_the_worker_goes_on(worker, caplog) -> None:
    w = worker(autostart=False)

    def broken(*args: object) -> None:
        raise RuntimeError("the display is gone")

    w.on_status = w.on_image = broken  # on_status also reports errors: it fails inside the worker's error handling
    w.update(active=True)
    assert w.wait(timeout=10) and w._thread.is_alive()
    w.update(w.settings.replace(style_weight=5.0))  # it keeps serving
    assert w.wait(timeout=10) and [run["style_weight"] for run in w.runs] == [DEFAULT_STYLE_WEIGHT, 5.0]
    logged = [record.getMessage() for record in caplog.records if record.name == "nstlib.course.worker"]
    assert sorted(message.split()[2] for message in logged) == ["on_image", "on_status"], logged

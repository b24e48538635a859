"""Figures: each helper returns a Figure that shows what its docstring promises."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nstlib.core.errors import (
    OutputError,
    ParameterError,  # noqa: E402
)
from nstlib.core.losses import gram_matrix  # noqa: E402
from nstlib.course.plots import (
    save_figure,
    show_grams,
    show_grid,
    show_images,
    show_receptive_fields,  # noqa: E402
    show_result,
)


def test_show_grams_crops_and_shares_one_colour_scale() -> None:
    small = gram_matrix(torch.rand(1, 8, 5, 5))
    big = 3 * gram_matrix(torch.rand(1, 40, 5, 5))
    fig = show_grams([small, big[0]], ["small", "big"], channels=16)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["small", "big"]
    shown = [ax.images[0] for ax in panels]
    assert shown[0].get_array().shape == (8, 8) and shown[1].get_array().shape == (16, 16)
    top = float(big[0, :16, :16].max())
    assert all(im.get_clim() == pytest.approx((0, top)) for im in shown)
    assert len(fig.axes) == 3  # two heatmaps and their shared colour bar
    plt.close(fig)


def test_show_receptive_fields_draws_centred_squares_of_the_given_sides() -> None:
    fig = show_receptive_fields(torch.rand(1, 3, 40, 60), {"conv1_1": 3, "conv3_1": 24, "conv5_1": 156})
    squares = fig.axes[0].patches
    assert [(p.get_width(), p.get_height()) for p in squares] == [(3, 3), (24, 24), (156, 156)]
    for p in squares:
        assert p.get_x() + p.get_width() / 2 == pytest.approx(30)
        assert p.get_y() + p.get_height() / 2 == pytest.approx(20)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][0] == "conv1_1: 3px"
    plt.close(fig)


def test_show_grid_puts_a_row_major_batch_in_rows_and_columns() -> None:
    batch = torch.zeros(6, 3, 4, 5)
    batch[4] = 1.0  # row 1, column 1 (row-major, 3 columns)
    fig = show_grid(batch, ["a", "b"], ["x", "y", "z"])
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_ylabel() for ax in axes[::3]] == ["a", "b"]
    assert [ax.get_xlabel() for ax in axes[3:]] == ["x", "y", "z"]
    assert [float(ax.get_images()[0].get_array().mean()) for ax in axes] == [0, 0, 0, 0, 255, 0]
    plt.close(fig)
    with pytest.raises(ParameterError, match="images: 5 images do not fill 2 rows x 3 columns"):
        show_grid(batch[:5], ["a", "b"], ["x", "y", "z"])


def test_save_figure_writes_the_suffix_format_atomically_and_never_over_a_file(tmp_path) -> None:
    fig = show_images([torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)], ["black", "white"])
    jpeg, png = save_figure(fig, tmp_path / "a.jpg"), save_figure(fig, tmp_path / "a.png")
    assert jpeg.read_bytes()[:2] == b"\xff\xd8" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = png.read_bytes()
    with pytest.raises(OutputError, match="a.png.*exists"):
        save_figure(show_images([torch.zeros(1, 3, 8, 8)]), png)
    assert png.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png"]
    with pytest.raises(OutputError, match="a.txt.*unknown image extension"):
        save_figure(fig, tmp_path / "a.txt")
    save_figure(show_images([torch.zeros(1, 3, 8, 8)]), png, overwrite=True)
    assert png.read_bytes() != before
    plt.close("all")


@pytest.mark.parametrize(("shape", "least"), [((1, 3, 64, 96), 700), ((1, 3, 96, 72), 700), ((1, 3, 128, 64), 470)])
def test_show_result_draws_the_result_large_beside_its_inputs(shape: tuple[int, ...], least: int) -> None:
    """Notebook 01's first picture: the result about 700 px wide in the figure (a photo taller than 4:3, less: at most
    960 px tall), the inputs smaller, long titles wrapped onto lines that fit their column."""
    inputs = [torch.rand(1, 3, 64, 96), torch.rand(1, 3, 80, 80)]
    fig = show_result(inputs, ["photo", "The Starry Night, Vincent van Gogh, 1889, public domain (Wikimedia Commons)"],
                      torch.rand(*shape), "result")
    fig.canvas.draw()
    widths = [ax.get_window_extent().width for ax in fig.axes]
    height = fig.axes[2].get_window_extent().height
    assert widths[2] >= least and height <= 961 and max(widths[:2]) < widths[2] / 2
    assert fig.axes[2].get_title() == "result" and "\n" in fig.axes[1].get_title()
    plt.close(fig)

"""The labelled figure that bench/feed_forward.py and bench/stylizer.py can write (`--figure PATH [--force]`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

import nstlib
from nstlib.core.errors import OutputError
from nstlib.io.files import check_output_path


def add_figure_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figure", help="also save the pictures here (.jpg or .png)")
    parser.add_argument("--force", action="store_true", help="replace an existing --figure")


def check_figure(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a --figure that cannot be written, before any work (exit 2 with argparse's message)."""
    if args.figure:
        try:
            check_output_path(args.figure, overwrite=args.force, extensions={".jpg", ".jpeg", ".png"})
        except OutputError as e:
            parser.error(str(e))


def write_figure(args: argparse.Namespace, images: Sequence[torch.Tensor], titles: Sequence[str], ncols: int,
                 label: str) -> None:
    """The images ((1,3,H,W) in [0,1]) with their titles, `label` above them, to --figure (if given)."""
    if args.figure:
        fig = nstlib.course.plots.show_images(images, titles, ncols=ncols)
        fig.suptitle(label, y=1.0, va="bottom", fontsize=9)
        nstlib.course.plots.save_figure(fig, args.figure, overwrite=args.force)
        print(f"\nwrote {args.figure}")

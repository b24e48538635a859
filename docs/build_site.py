"""Build the course site: the executed notebooks, the notes in docs/ and the API reference, with Sphinx and myst-nb.

    python docs/build_site.py               # re-execute the notebooks whose cells changed, then build
    python docs/build_site.py --no-execute  # build from the executed copies as they are (what CI does)

The notebooks in notebooks/ are committed without outputs. Their executed copies live in docs/course/: each was
run top to bottom in a fresh kernel in full mode (`nstlib.course`: the sizes a GPU runs, 384 px and more, on a CPU
too, where it takes several minutes a notebook) with the best network available (the packaged VGG16 offline,
ImageNet VGG19 where it can be downloaded), and records when, how long it took and on what; the setup cell's output
says the network. A copy whose code differs from its notebook is stale: the build re-executes it, and `--no-execute`
refuses to build; a copy whose text alone differs takes the notebook's text, since text does not change outputs.
The site goes to docs/_build/html; publish that folder (README: "The course site").
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from PIL import Image, ImageSequence

import nstlib

DOCS = Path(__file__).resolve().parent
NOTEBOOKS = DOCS.parent / "notebooks"
EXECUTED = DOCS / "course"
SITE = DOCS / "_build" / "html"


def notebooks() -> list[Path]:
    """The course's notebooks, in order: notebooks/NN_*.ipynb."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What a notebook says: each cell's type, source and tags (outputs, ids and other metadata left out)."""
    return [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in notebook.cells]


def stale(source: Path) -> str | None:
    """Why the executed copy of notebook `source` cannot be used as it is, or None if it can."""
    copy = EXECUTED / source.name
    if not copy.is_file():
        return f"the executed copy of {source.name} is missing"
    if cells(nbformat.read(copy, as_version=4)) != cells(nbformat.read(source, as_version=4)):
        return f"the executed copy of {source.name} differs from it"
    return None


def code(notebook: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What a notebook runs: its cells as `cells` gives them, with the text of markdown cells left out."""
    return [(kind, source if kind == "code" else "", tags) for kind, source, tags in cells(notebook)]


def retext(source: Path) -> bool:
    """If the executed copy of `source` runs the same code and differs only in its text, give it the notebook's text
    (atomically) and return True; else change nothing and return False."""
    copy = EXECUTED / source.name
    if not copy.is_file():
        return False
    executed, notebook = nbformat.read(copy, as_version=4), nbformat.read(source, as_version=4)
    if code(executed) != code(notebook):
        return False
    for old, new in zip(executed.cells, notebook.cells):
        old.source = new.source
    partial = EXECUTED / f".{source.name}.partial"
    nbformat.write(executed, partial)
    partial.replace(copy)
    return True


WIDGET = "application/vnd.jupyter.widget-view+json"
#: An animation larger than this keeps every k-th frame, k as small as fits (`thin_gif`).
GIF_BYTES = 1_000_000


def thin_gif(gif: bytes) -> bytes:
    """A GIF of more than `GIF_BYTES`, written again (`nstlib.save_gif`) with every k-th frame and the last, each shown
    k times as long: the same animation in the same time, in fewer frames. A smaller one is returned as it is."""
    if len(gif) <= GIF_BYTES:
        return gif
    with Image.open(io.BytesIO(gif)) as animation:
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(animation)]
        duration = animation.info.get("duration", 100)
    k = math.ceil(len(gif) / GIF_BYTES)
    kept = frames[::k] + ([frames[-1]] if (len(frames) - 1) % k else [])
    with tempfile.TemporaryDirectory() as folder:
        return nstlib.save_gif(kept, Path(folder) / "thin.gif", duration_ms=duration * k).read_bytes()



def compact(notebook: nbformat.NotebookNode) -> None:
    """Make an executed notebook a page: without a kernel a widget cannot respond, so the widgets' saved state goes,
    a widget displayed along the way (a progress bar) goes, and a widget that is a cell's value (the explorer)
    keeps its line of text. Each PNG output is stored as a JPEG where that at least halves it (photos and feature
    maps do; line plots stay PNG), and a large animation is thinned (`thin_gif`), so the executed copies stay a few
    hundred kB each."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [output for output in cell.outputs
                        if not (output.output_type == "display_data" and WIDGET in output.get("data", {}))]
        for output in cell.outputs:
            data = output.get("data", {})
            data.pop(WIDGET, None)
            if "image/gif" in data:
                data["image/gif"] = base64.b64encode(thin_gif(base64.b64decode(data["image/gif"]))).decode()
            if "image/png" not in data:
                continue
            png = base64.b64decode(data["image/png"])
            picture = Image.open(io.BytesIO(png)).convert("RGBA")
            flat = Image.new("RGB", picture.size, "white")
            flat.paste(picture, mask=picture.getchannel("A"))
            jpeg = io.BytesIO()
            flat.save(jpeg, "JPEG", quality=85, optimize=True)
            if 2 * jpeg.tell() <= len(png):
                del data["image/png"]
                data["image/jpeg"] = base64.b64encode(jpeg.getvalue()).decode()


def execute(source: Path) -> float:
    """Run notebook `source` top to bottom in a fresh kernel in full mode (NSTLIB_FAST=0); write its executed copy
    atomically.

    Returns the seconds it took. Raises nbclient's CellExecutionError if a cell fails (nothing is written then).
    """
    notebook = nbformat.read(source, as_version=4)
    env = {**os.environ, "NSTLIB_FAST": "0"}  # full mode on any device: the site shows the course's full sizes
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as output:  # what a notebook offers for download, not left in notebooks/
        env["NSTLIB_OUTPUT_DIR"] = output
        NotebookClient(notebook, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute(env=env)  # the kernel's environment
    seconds = time.perf_counter() - start
    compact(notebook)
    notebook.metadata["nstlib"] = {"seconds": round(seconds), "cores": os.cpu_count(), "machine": platform.machine(),
                                   "torch": version("torch"), "executed": time.strftime("%Y-%m-%d")}
    EXECUTED.mkdir(exist_ok=True)
    partial = EXECUTED / f".{source.name}.partial"
    nbformat.write(notebook, partial)
    partial.replace(EXECUTED / source.name)
    return seconds


def build(outdir: Path = SITE) -> Path:
    """Run Sphinx on docs/ (notebooks are read, not executed); returns the site's index.html."""
    from sphinx.cmd.build import build_main

    if build_main(["-q", "-b", "html", str(DOCS), str(outdir)]) != 0:
        raise SystemExit("sphinx-build failed: see the messages above")
    return outdir / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-execute", action="store_true", help="build from docs/course/ as it is")
    args = parser.parse_args(argv)
    reasons = {source: stale(source) for source in notebooks()}
    if args.no_execute:
        problems = [reason for reason in reasons.values() if reason]
        if problems:
            print("error: " + "; ".join(problems) + ". Run: python docs/build_site.py", file=sys.stderr)
            return 2
    else:
        for source, reason in reasons.items():
            if reason and retext(source):
                print(f"{source.name}: the executed copy takes the notebook's new text", flush=True)
            elif reason:
                print(f"executing {source.name} ({reason})", flush=True)
                try:
                    print(f"  {execute(source):.0f} s", flush=True)
                except CellExecutionError as e:  # the failing cell and its traceback, then stop: nothing built
                    print(f"error: a cell of {source.name} failed (its executed copy is unchanged):\n{e}",
                          file=sys.stderr)
                    return 1
    print(f"site: {build()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

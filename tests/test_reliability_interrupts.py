"""Fault injection: Ctrl-C inside a step, in Python and in the CLI. Rows of docs/reliability.md."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from common import CONTENT, RUN, STYLE
from PIL import Image

from nstlib.api import stylize
from nstlib.core.features import VGGFeatures
from nstlib.io.images import save_image

# --- Interrupts ---------------------------------------------------------------------------------------

def test_ctrl_c_inside_a_step_returns_the_last_complete_image(vgg, content, style, fail_on_gradient_call,
                                                              three_steps, tmp_path) -> None:
    expected = three_steps
    fail_on_gradient_call(4, KeyboardInterrupt())  # Ctrl-C during step 4's backward pass
    result = stylize(content, style, steps=10, network=vgg, **RUN)
    assert result.interrupted and result.status == "interrupted after step 3"
    assert torch.equal(result.image, expected)  # nothing lost: exactly the image after 3 steps
    with Image.open(save_image(result, str(tmp_path / "r.png"))) as img:
        assert img.text["nstlib:status"] == "interrupted after step 3"


def test_ctrl_c_while_the_last_image_is_scored_keeps_it(vgg, content, style, monkeypatch) -> None:
    """The run's last moment: its steps are done and the final image is being scored (a forward pass)."""
    done = stylize(content, style, steps=2, network=vgg, **RUN)
    forward, passes = VGGFeatures.forward, []

    def interrupted(self: VGGFeatures, image: torch.Tensor) -> dict[str, torch.Tensor]:
        passes.append(image.requires_grad)
        if passes[-3:] == [True, True, False]:  # after the two steps' passes
            raise KeyboardInterrupt
        return forward(self, image)

    monkeypatch.setattr(VGGFeatures, "forward", interrupted)
    result = stylize(content, style, steps=2, network=vgg, **RUN)
    assert result.interrupted and result.status == "interrupted after step 2"
    assert torch.equal(result.image, done.image)


def _default_sigint() -> None:
    """Run in the child before exec: give it the default SIGINT handler. A background job of a
    non-interactive shell (`pytest &` in a script, some CI runners) starts with SIGINT ignored, and a
    child inherits that, so Python would never raise KeyboardInterrupt and the test would hang."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_cli_and_interrupt(out: Path, *extra: str, number: int = signal.SIGINT) -> tuple[subprocess.CompletedProcess,
                                                                                            str]:
    """Start the CLI, wait until the progress bar shows a finished step, then send signal `number`.
    Returns the finished process and its one 'nstlib: ...' line on stderr."""
    argv = [sys.executable, "-m", "nstlib.apps.cli", "stylize", CONTENT, STYLE, "-o", str(out), "--size", "64",
            "--steps", "100000", "--weights", "random", "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=_default_sigint)
    seen: list[bytes] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not re.search(rb"\b[1-9]\d*/100000", b"".join(seen)):
        assert proc.poll() is None, b"".join(seen).decode()
        assert time.monotonic() < deadline, "the CLI never started optimising"
        time.sleep(0.2)
    proc.send_signal(number)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    err = b"".join(seen).decode()
    notices = [line for line in re.split(r"[\r\n]", err) if line.startswith("nstlib")]
    assert len(notices) == 1, err  # exactly one line of explanation besides the progress bar
    return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout.read().decode(), err), notices[0]


@pytest.mark.parametrize(("number", "save_partial"), [(signal.SIGINT, False), (signal.SIGTERM, True)])
def test_cli_ctrl_c_writes_only_with_save_partial(tmp_path, number: int, save_partial: bool) -> None:
    """Ctrl-C, and SIGTERM (`timeout`, `docker stop`) alike: exit 128 + the signal (SIGHUP, and every signal at other
    moments: `test_hostile.py::test_cli`, in this process)."""
    out = tmp_path / "out.png"
    proc, last_line = _run_cli_and_interrupt(out, *(["--save-partial"] if save_partial else []), number=number)
    assert proc.returncode == 128 + number and "Traceback" not in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == (["out.png"] if save_partial else [])  # no temporary files
    if save_partial:
        assert "wrote the partial result" in last_line, last_line
        with Image.open(out) as img:
            assert img.size == (64, 64) and re.fullmatch(r"interrupted after step \d+", img.text["nstlib:status"])
    else:
        assert "nothing written (use --save-partial" in last_line, last_line

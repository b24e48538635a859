"""Fault injection: out of memory: the estimate, the refusal before work, and a GPU running out mid-
run. Rows of docs/reliability.md."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from common import CONTENT, FAST, RUN, STYLE
from PIL import Image

import nstlib.engine.memory
from nstlib.api import stylize
from nstlib.apps.cli import main
from nstlib.core.errors import MemoryLimitError
from nstlib.core.features import VGGFeatures, random_weights
from nstlib.core.objective import Objective
from nstlib.core.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from nstlib.engine.memory import available_bytes, estimate_bytes, network_cost

# --- Out of memory ---------------------------------------------------------------------------------------

def test_gpu_out_of_memory_keeps_the_last_good_image(fail_on_gradient_call, three_steps, vgg, content, style) -> None:
    expected = three_steps
    fail_on_gradient_call(4, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    with pytest.raises(MemoryLimitError) as info:
        stylize(content, style, steps=10, network=vgg, **RUN)
    message = str(info.value)
    for words in ("out of CPU memory at 64x64 after step 3", "smaller size", "coarse-to-fine", "optimizer='adam'"):
        assert words in message, message
    result = info.value.result
    assert torch.equal(result.image, expected) and result.status == "stopped: out of memory after step 3"


def test_out_of_memory_while_computing_targets_keeps_the_coarser_scale(vgg, content, style, monkeypatch) -> None:
    forward = VGGFeatures.forward

    def failing(self, image):  # the targets (no gradients) of the last, 64 px scale do not fit
        if not image.requires_grad and image.shape[-1] == 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")
        return forward(self, image)

    monkeypatch.setattr(VGGFeatures, "forward", failing)
    with pytest.raises(MemoryLimitError, match=r"out of CPU memory at 64x64 after step 2") as info:
        stylize(content, style, steps=4, coarse_to_fine=True, pyramid_start=32, network=vgg, **RUN)
    result = info.value.result  # the two coarser scales' 2 steps, brought to the full size
    assert result.status == "stopped: out of memory after step 2" and result.image.shape == (1, 3, 64, 64)
    assert (result.image - content).abs().mean() > 1e-3  # the 32 and 45 px scales' work is kept


def _graph_tensors(error: BaseException) -> list[torch.Tensor]:
    """Tensors of an autograd graph still reachable from the variables of the frames that `error`
    (or the error it was raised from) passed through."""
    found = []
    for exc in (error, error.__context__):
        tb = exc.__traceback__ if exc is not None else None
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                values = value.values() if isinstance(value, dict) else [value]
                found += [v for v in values if isinstance(v, torch.Tensor) and v.grad_fn is not None]
            tb = tb.tb_next
    return found


def test_out_of_memory_in_backward_releases_the_failed_steps_graph(vgg, content, style, monkeypatch) -> None:
    forward, calls = Objective.forward, [0]

    def failing(self, image):  # the third step runs out of memory in its backward pass
        terms = forward(self, image)
        calls[0] += image.requires_grad
        if calls[0] == 3 and image.requires_grad:
            terms["total"].register_hook(lambda grad: _raise(torch.cuda.OutOfMemoryError("CUDA out of memory")))
        return terms

    monkeypatch.setattr(Objective, "forward", failing)
    with pytest.raises(MemoryLimitError, match="after step 2") as info:
        stylize(content, style, steps=5, network=vgg, **RUN)
    assert _graph_tensors(info.value) == []  # Jupyter keeps the last error: it must not pin the activations


def _raise(error: BaseException) -> None:
    raise error


class _NoRoomForTheNetwork(VGGFeatures):
    """An extractor that runs out of device memory when moved there."""

    def to(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 MiB")


def test_out_of_memory_while_moving_to_the_device_is_one_clear_error(content, style) -> None:
    extractor = _NoRoomForTheNetwork([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], random_weights())
    with pytest.raises(MemoryLimitError, match="before the first step.*restart the runtime") as info:
        stylize(content, style, steps=2, network=extractor, **RUN)
    assert info.value.result is None and info.value.__suppress_context__


def test_out_of_memory_as_a_plain_runtime_error_and_other_errors(fail_on_gradient_call, vgg, content, style) -> None:
    fail_on_gradient_call(2, RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"))  # not CUDA's type
    with pytest.raises(MemoryLimitError, match="after step 1"):
        stylize(content, style, steps=4, network=vgg, **RUN)
    fail_on_gradient_call(2, RuntimeError("a bug, not memory"))
    with pytest.raises(RuntimeError, match="a bug, not memory"):  # other errors are not disguised
        stylize(content, style, steps=4, network=vgg, **RUN)


def test_cli_out_of_memory_saves_the_marked_partial_result(fail_on_gradient_call, tmp_path, capsys) -> None:
    fail_on_gradient_call(2, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    code = main(["stylize", CONTENT, STYLE, "-o", str(tmp_path / "out.png"), *FAST, "--save-partial"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "out of CPU memory at 64x64 after step 1" in err, err
    with Image.open(tmp_path / "out.png") as img:
        assert img.text["nstlib:status"] == "stopped: out of memory after step 1"


def test_memory_estimate_matches_a_hand_calculation() -> None:
    # 32x32 image, network up to relu2_1. Kept for backward: relu1_1 and relu1_2 (64x32x32 each),
    # pool1 (64x16x16) with its int64 indices (2 floats each), relu2_1 (128x16x16). Largest map: 64x32x32.
    kept = 2 * 64 * 32 * 32 + 3 * 64 * 16 * 16 + 128 * 16 * 16
    params = (3 * 64 * 9 + 64) + (64 * 64 * 9 + 64) + (64 * 128 * 9 + 128)
    assert network_cost(32, 32, "relu2_1") == (kept, 64 * 32 * 32, params) == (212_992, 65_536, 112_576)
    image = 3 * 32 * 32
    lbfgs = 4 * (kept + 3 * 65_536 + (3 + 2 * 11 + 2) * image + params)  # L-BFGS, history 10: a ring of 11 pairs + 2
    assert estimate_bytes(32, 32, ["relu1_1", "relu2_1"], optimizer="lbfgs", history_size=10) == lbfgs == 2_420_480
    adam = 4 * (2 * (kept + 3 * 65_536 + (3 + 2) * image) + params)  # batch of 2, Adam: 2 buffers each
    assert estimate_bytes(32, 32, ["relu2_1"], optimizer="adam", batch=2) == adam


def test_huge_size_is_refused_before_allocating(refuse_work, capsys) -> None:
    refuse_work()
    free = available_bytes()
    assert free is not None and free > 0
    with pytest.raises(MemoryLimitError, match=r"100000x100000 needs about [\d.]+ GiB but only") as info:
        stylize(CONTENT, STYLE, network="random", **{**RUN, "size": 100_000})
    assert "smaller size" in str(info.value) and info.value.result is None
    assert main(["stylize", CONTENT, STYLE, "-o", "/tmp/never.png", *FAST, "--size", "100000"]) == 2
    assert "GiB of RAM is free" in capsys.readouterr().err
    assert not Path("/tmp/never.png").exists()


def test_refusal_threshold_follows_free_ram(refuse_work, monkeypatch) -> None:
    monkeypatch.setattr(nstlib.engine.memory, "available_bytes", lambda: 2**30)  # pretend 1 GiB is free
    refuse_work()
    with pytest.raises(MemoryLimitError, match="1024x1024"):
        stylize(np.zeros((1024, 1024, 3), dtype=np.uint8), STYLE, network="random", **{**RUN, "size": None})
    with pytest.raises(AssertionError, match="work started"):  # a small size passes the check and starts work
        stylize(np.zeros((64, 64, 3), dtype=np.uint8), STYLE, network="random", **{**RUN, "size": None})


def test_a_run_the_estimate_says_will_not_fit_is_refused(refuse_work, monkeypatch) -> None:
    """No slack above the free RAM: the estimate is an upper bound already (a 20 GiB pass with 17 GiB free started)."""
    need = estimate_bytes(1024, 1024, DEFAULT_STYLE_LAYERS, optimizer="lbfgs", history_size=50)
    photo = np.zeros((1024, 1024, 3), dtype=np.uint8)
    refuse_work()
    monkeypatch.setattr(nstlib.engine.memory, "available_bytes", lambda: need * 10 // 11)
    with pytest.raises(MemoryLimitError, match="1024x1024"):
        stylize(photo, STYLE, network="random", **{**RUN, "size": None})
    monkeypatch.setattr(nstlib.engine.memory, "available_bytes", lambda: need)
    with pytest.raises(AssertionError, match="work started"):
        stylize(photo, STYLE, network="random", **{**RUN, "size": None})


GiB = 2**30


def _machine(root: Path, cgroup: str, files: dict[str, object]) -> Path:
    """A fake /proc and /sys under `root`: 16 GiB available, the process in `cgroup`, and cgroup `files`."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text(f"MemTotal: {32 * 2**20} kB\nMemAvailable: {16 * 2**20} kB\n")
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, value in files.items():
        (root / "sys/fs/cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys/fs/cgroup" / name).write_text(f"{value}\n")
    return root


@pytest.mark.parametrize(("cgroup", "files", "free"), [
    pytest.param("0::/system.slice/run-1.scope\n", {"memory.max": "max", "system.slice/run-1.scope/memory.max":
                 GiB * 3 // 2, "system.slice/run-1.scope/memory.current": 0}, GiB * 3 // 2,
                 id="v2, systemd-run -p MemoryMax="),
    pytest.param("0::/user.slice/a.scope\n", {"user.slice/memory.max": GiB, "user.slice/memory.current": GiB // 2,
                 "user.slice/a.scope/memory.max": "max", "user.slice/a.scope/memory.current": GiB // 4}, GiB // 2,
                 id="v2, the parent's limit"),
    pytest.param("12:memory:/slurm/uid_0/job_7\n3:cpu,cpuacct:/\n0::/\n",
                 {"memory/memory.limit_in_bytes": 9223372036854771712, "memory/memory.usage_in_bytes": 4 * GiB,
                  "memory/slurm/uid_0/job_7/memory.limit_in_bytes": 2 * GiB,
                  "memory/slurm/uid_0/job_7/memory.usage_in_bytes": GiB // 2}, GiB * 3 // 2, id="v1, SLURM"),
    pytest.param("0::/\n", {"memory.max": "max", "memory.current": GiB}, 16 * GiB, id="no limit"),
    pytest.param("0::/gone\n", {"memory.max": 2 * GiB, "memory.current": GiB}, GiB,
                 id="a cgroup not under this mount (a container): its root"),
])
def test_the_memory_limit_is_read_where_the_process_lives(tmp_path, cgroup: str, files: dict, free: int) -> None:
    assert available_bytes(_machine(tmp_path, cgroup, files)) == free


def test_a_run_that_does_not_fit_its_cgroup_is_refused(refuse_work, tmp_path, monkeypatch) -> None:
    root = _machine(tmp_path, "0::/job\n", {"job/memory.max": GiB * 3 // 2, "job/memory.current": 0})
    monkeypatch.setattr(nstlib.engine.memory, "available_bytes", partial(available_bytes, root))
    refuse_work()
    with pytest.raises(MemoryLimitError, match=r"1024x1024 needs about 3.5 GiB but only 1.5 GiB of RAM is free"):
        stylize(CONTENT, STYLE, network="random", **{**RUN, "size": 1024})

"""Every GPU path of nstlib on a CPU, with tensors that claim a GPU (tests/fake_gpu.py).

Each public entry point runs end to end under every plan `Runtime` can choose: bf16 with CUDA graphs
(an A100/L4), fp16 with a loss scale, captured too (a T4), plain float32 (`mixed_precision=False`) and
the MPS plan. A tensor left on the CPU among device tensors fails as on a GPU, autocast produces the
dtypes the GPU would, and a host read inside a captured step fails. The fallbacks of the GPU path (a
capture, or a first replay that fails; running out of memory beside cached graphs) are shown by fault
injection. Then: captured steps reused across runs and dropped with their network, one capture at a
time, nothing held after an error, the Gram matrices' dtypes, float16's range with a Caffe network,
notebook 04's timing window; and each rule of the fake GPU with the mutation of nstlib it catches.
"""

from __future__ import annotations

import gc
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from unittest import mock

import pytest
import torch
from fake_gpu import Claimed, HostSync, StaleInput, fake_gpu

from nstlib.api import evaluate, stylize, stylize_grid
from nstlib.apps.fast_style import train
from nstlib.checks import validate
from nstlib.core import loop
from nstlib.core.errors import MemoryLimitError, NonFiniteLossError, ParameterError
from nstlib.core.features import VGGFeatures, random_weights
from nstlib.core.lbfgs import SyncFreeLBFGS
from nstlib.core.objective import Targets
from nstlib.core.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, Settings
from nstlib.course.worker import ExplorerWorker
from nstlib.engine import graphs
from nstlib.engine.runtime import LOG_EVERY, Runtime

#: name -> (fake_gpu arguments, stylize's mixed_precision, what the plan is)
PLANS = {
    "bf16-graph": (dict(kind="cuda", capability=(8, 0)), None),
    "fp16-loss-scale": (dict(kind="cuda", capability=(7, 5)), None),
    "fp32": (dict(kind="cuda", capability=(8, 0)), False),
    "mps": (dict(kind="mps"), None),
}
RUN = dict(steps=6, size=32, progress=False)


@pytest.fixture(autouse=True)
def _fresh_fallbacks() -> Iterator[None]:
    """Each test starts in a process where no acceleration has failed yet."""
    saved = dict(graphs.FAILED)
    graphs.FAILED.clear()
    yield
    graphs.FAILED.clear()
    graphs.FAILED.update(saved)


@pytest.fixture
def net() -> VGGFeatures:
    """A fresh random network per test: moving it to the claimed GPU replaces its parameters."""
    return VGGFeatures([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], random_weights())


def _plan(name: str) -> tuple[dict, bool | None]:
    return PLANS[name]


def _device(name: str) -> str:
    return _plan(name)[0]["kind"]


# ---------------------------------------------------------------- the layer itself can fail


def test_the_fake_gpu_fails_where_a_gpu_fails() -> None:
    with fake_gpu() as mode:
        x = torch.rand(2, 3, device="cuda")
        assert isinstance(x, Claimed) and x.device == torch.device("cuda", 0)
        assert isinstance(x * torch.tensor(2.0), Claimed)  # a 0-dim CPU tensor mixes, as on a GPU
        with pytest.raises(RuntimeError, match="same device, but found at least two devices, cuda:0 and cpu"):
            _ = x * torch.ones(3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = x @ x.T
        assert y.dtype == torch.bfloat16
        with pytest.raises(RuntimeError, match="expected|same dtype|dtype"):
            _ = y @ x
        reads = mode.host_reads
        assert float(x.sum()) > 0 and mode.host_reads == reads + 1
        with mode.capturing(), pytest.raises(HostSync, match="__bool__ reads a GPU tensor on the host"):
            bool(x.sum() > 0)
        assert not isinstance(x.cpu(), Claimed)


def test_a_host_read_in_a_captured_step_fails_the_run(net, content, style) -> None:
    """A step that reads a loss on the host cannot be captured: the emulated capture refuses it."""
    real = loop.take_step

    def syncing_step(*args, **kwargs):
        terms, evaluations = real(*args, **kwargs)
        float(terms["total"][0])
        return terms, evaluations

    with fake_gpu() as mode, mock.patch.object(graphs, "take_step", syncing_step), \
            mock.patch.object(graphs.GraphedStep, "_fall_back", side_effect=lambda error: (_ for _ in ()).throw(error)):
        with pytest.raises(HostSync):
            stylize(content, style, network=net, runtime="cuda", **RUN)
    assert mode.captures == 1


# ---------------------------------------------------------------- every entry point under every plan


@pytest.mark.parametrize("plan", PLANS)
def test_stylize_runs_each_plan_on_the_gpu(plan: str, net, content, style) -> None:
    gpu, mixed_precision = _plan(plan)
    with fake_gpu(**gpu) as mode:
        result = stylize(content, style, network=net, runtime=Runtime.create(_device(plan), mixed_precision), **RUN)
        chosen = Runtime.create(_device(plan), mixed_precision)
    assert not isinstance(result.image, Claimed) and result.image.shape == (1, 3, 32, 32)
    assert [h["step"] for h in result.history] == list(range(RUN["steps"] + 1))
    assert result.final["total"] < result.history[0]["total"]  # real values: the objective fell
    dtypes = {a["dtype"] for a in mode.autocasts}
    if plan in ("bf16-graph", "fp16-loss-scale"):  # the fp16 plan of a T4 with its loss scale, captured too
        assert chosen.graphed and dtypes == {torch.bfloat16 if plan == "bf16-graph" else torch.float16}
        assert chosen.precision.loss_scaling == (plan == "fp16-loss-scale")
        assert mode.captures == 1 and mode.replays == RUN["steps"] - graphs.WARMUP
    else:
        assert chosen.precision is None and not mode.autocasts and not chosen.graphed and mode.captures == 0
    assert all(a["cache_enabled"] is False for a in mode.autocasts)  # what torch asks for in a CUDA graph
    # Losses reach the host every `log_every` steps on a GPU (10, so once here, at the end), besides the start
    # image, the final image's finite check, its score and its copy: 5 reads in all.
    assert chosen.log_every == LOG_EVERY and mode.host_reads <= 5


@pytest.mark.parametrize("plan", PLANS)
def test_stylize_grid_runs_each_plan_on_the_gpu(plan: str, net, content, style) -> None:
    """The grid's (N,) loss weights must reach the device: left on the CPU they are a device mismatch at step 1."""
    gpu, mixed_precision = _plan(plan)
    with fake_gpu(**gpu):
        grid = stylize_grid(content, style, style_weights=[1.0, 100.0], network=net,
                            runtime=Runtime.create(_device(plan), mixed_precision), **RUN)
    assert grid.image.shape == (2, 3, 32, 32)
    first, last = grid.history[0]["total"], grid.final["total"]
    assert all(b < a for a, b in zip(first, last))


@pytest.mark.parametrize("plan", ["fp32", "mps"])
def test_evaluate_on_the_gpu_matches_the_cpu(plan: str, net, content, style) -> None:
    cpu = evaluate(content, content, style, network=net, runtime="cpu")
    with fake_gpu(**_plan(plan)[0]):
        gpu = evaluate(content, content, style, network=net, runtime=_device(plan))
    assert gpu == pytest.approx(cpu, rel=1e-5)


@pytest.mark.parametrize("plan", ["bf16-graph", "fp16-loss-scale"])
def test_the_explorer_worker_follows_a_slider_on_the_gpu(plan: str, net, content, style) -> None:
    gpu, _ = _plan(plan)
    with fake_gpu(**gpu) as mode:
        work = ExplorerWorker._work
        with mock.patch.object(ExplorerWorker, "_work", lambda self: _in_mode(mode, work, self)):
            worker = ExplorerWorker(content, style, validate(Settings(steps=6)), runtime="cuda",
                                    network=net, preview_size=32, render_steps=4,
                                    frame_every=3, debounce=0.0)
            worker.start()
            try:
                assert worker.wait(120)
                reads = mode.host_reads
                worker.update(worker.settings.replace(style_weight=1234.0))
                assert worker.wait(120)
            finally:
                worker.close()
    assert [h["step"] for h in worker.history if h["run"] == 1] == [1, 2, 3, 4, 5, 6]
    assert worker.runs[-1]["style_weight"] == 1234.0 and not isinstance(worker.image, Claimed)
    # The terms reach the host with the pictures of the frames (steps 1, 3, 6: 2 reads each), besides the
    # run's own 5 (see the stylize test); 4 floats at every step would add 24.
    assert mode.host_reads - reads <= 11


def _in_mode(mode, work, worker) -> None:
    """The worker's thread body inside the fake GPU's function mode (modes are per thread)."""
    with mode:
        work(worker)


@pytest.mark.parametrize("plan", ["bf16-graph", "fp16-loss-scale"])
def test_fast_style_trains_on_the_gpu_with_mixed_precision(plan: str, net, content, style) -> None:
    with fake_gpu(**_plan(plan)[0]) as mode:
        model, history = train(style, [content], steps=2, size=32, batch=2, width=4, blocks=1, network=net,
                               runtime="cuda", progress=False)
    assert next(model.parameters()).device.type == "cuda" and len(history) == 2
    assert {a["dtype"] for a in mode.autocasts} == {torch.bfloat16 if plan == "bf16-graph" else torch.float16}
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_compare_scoring_runs_on_the_gpu(net, content, style) -> None:
    compare = pytest.importorskip("nstlib.apps.compare")
    if not compare.available():
        pytest.skip('needs the compare extra: pip install -e ".[compare]"')
    with fake_gpu():
        images, rows = compare.compare(content, style, size=64, steps=2, network=net, runtime="cuda",
                                       progress=False)
    assert [r["method"] for r in rows][0] == "content (unchanged)" and all(r["total"] > 0 for r in rows)


def test_sync_free_lbfgs_refuses_a_half_precision_image() -> None:
    for dtype in (torch.bfloat16, torch.float16):
        with pytest.raises(ParameterError, match="needs a float32 or float64 image"):
            SyncFreeLBFGS([torch.rand(1, 3, 8, 8, dtype=dtype)])


# ---------------------------------------------------------------- fallbacks, by fault injection


def _totals(result) -> list[float]:
    return [h["total"] for h in result.history]


def _eager_totals(net, content, style) -> list[float]:
    """The same run with CUDA graphs off: the totals a fallback must reproduce, step for step."""
    with fake_gpu():
        return _totals(stylize(content, style, network=net, runtime=Runtime.create("cuda", cuda_graph=False), **RUN))


@contextmanager
def _warnings() -> Iterator[list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def _capture_fails(step) -> None:
    raise RuntimeError("CUDA error: operation not permitted when stream is capturing")


class _GraphThatFailsToLaunch:
    def replay(self) -> None:
        raise RuntimeError("CUDA error: invalid device function")


def _capture_then_launch_fails(step):
    """A capture that records (runs nothing, as on a GPU) and a graph whose first launch fails."""
    return _GraphThatFailsToLaunch(), ({}, 1)


@pytest.mark.parametrize(("fault", "cause"), [(_capture_fails, "operation not permitted when stream is capturing"),
                                              (_capture_then_launch_fails, "invalid device function")])
def test_a_failed_capture_or_first_replay_warns_once_and_loses_no_step(fault, cause: str, net, content,
                                                                      style) -> None:
    expected = _eager_totals(net, content, style)
    with fake_gpu() as mode, mock.patch.object(graphs, "capture", fault), _warnings() as messages:
        first = stylize(content, style, network=net, runtime="cuda", **RUN)
        again = stylize(content, style, network=net, runtime="cuda", **RUN)
        graphed_later = Runtime.create("cuda").graphed
    assert _totals(first) == pytest.approx(expected, rel=1e-6)  # every step, taken eagerly from where it was
    assert _totals(again) == pytest.approx(expected, rel=1e-6)
    assert len(messages) == 1 and f"CUDA graph capture failed (RuntimeError: CUDA error: {cause})" in messages[0]
    assert "eagerly" in messages[0] and not graphed_later and mode.captures == 0
    assert not graphs._cache  # an eager step is not kept for replays


def test_running_out_of_memory_frees_every_cached_graph_and_keeps_the_last_image(net, content, style) -> None:
    real, calls = graphs.take_step, []

    def out_of_memory_at_the_fifth_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    with fake_gpu():
        stylize(content, style, network=net, runtime="cuda", **RUN)
        assert len(graphs._cache) == 1  # the 32 px graph, kept for a later run
        calls.clear()
        with mock.patch.object(graphs, "take_step", out_of_memory_at_the_fifth_step), \
                pytest.raises(MemoryLimitError, match="out of GPU memory at 48x48 after step 4") as info:
            stylize(content, style, network=net, runtime="cuda", **{**RUN, "size": 48})
        assert not graphs._cache  # nothing is held for the user to retry with a smaller size
    result = info.value.result
    assert result.image.shape == (1, 3, 48, 48) and torch.isfinite(result.image).all() and result.steps == 4


# ---------------------------------------------------------------- graphs reused, one capture at a time, nothing held


@contextmanager
def _tracked_steps() -> Iterator[weakref.WeakSet]:
    """Every `GraphedStep` made inside the block, held weakly: what is still alive is what something holds."""
    made, init = weakref.WeakSet(), graphs.GraphedStep.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.add(self)

    with mock.patch.object(graphs.GraphedStep, "__init__", tracked):
        yield made


def test_runs_naming_the_same_weights_share_one_network_and_one_captured_step(content, style) -> None:
    """CLI-style calls give weights, not a network: each used to build its own VGG, so each captured its own step and
    the cache kept them all (a VGG, its graph's memory and its L-BFGS history each)."""
    with fake_gpu() as mode, _tracked_steps() as made:
        for _ in range(2):
            stylize(content, style, network="random", runtime="cuda", **RUN)
        gc.collect()
        assert mode.captures == 1 and len(graphs._cache) == 1 and len(made) == 1


def test_the_network_built_for_weights_follows_their_numbers(tmp_path) -> None:
    """Same numbers, same network; numbers changed in place, or another file under the same name, another one."""
    from nstlib.api import Run

    def network(weights):
        return Run.begin(None, {}, weights, "cpu").network()

    weights = random_weights()
    first = network(weights)
    assert network(random_weights()) is first
    with torch.no_grad():
        weights.state_dict["0.bias"].add_(1.0)
    changed = network(weights)
    assert changed is not first and changed.net[0].bias[0] == 1.0
    path = tmp_path / "vgg.pth"
    torch.save(random_weights(seed=1).state_dict, path)
    first = network(path)
    torch.save(random_weights(seed=2).state_dict, path)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))  # a rewrite within the clock's resolution
    assert network(path) is not first and not torch.equal(network(path).net[0].weight, first.net[0].weight)


def test_a_run_with_another_network_drops_the_steps_of_the_first(net, content, style) -> None:
    other = VGGFeatures([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], random_weights(seed=1))
    with fake_gpu(), _tracked_steps() as made:
        stylize(content, style, network=net, runtime="cuda", **{**RUN, "steps": 1})
        stylize(content, style, network=other, runtime="cuda", **{**RUN, "steps": 1})
        gc.collect()
        assert len(graphs._cache) == 1 and len(made) == 1


def test_a_kept_error_holds_no_captured_step(net, content, style) -> None:
    """Jupyter keeps the last error. A NaN found mid-run (at step 2, the first check of the losses here) or running out
    of memory while a new step allocates its L-BFGS history must leave no `GraphedStep` alive: not the run's, held by
    the frames of the error's traceback, nor a cached one."""
    make_optimizer = graphs.make_optimizer

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.90 GiB")

    with fake_gpu(), _tracked_steps() as made:
        with pytest.raises(NonFiniteLossError) as nan:
            stylize(content, style, network=net, runtime=Runtime.create("cuda", log_every=2), style_weight=1e38,
                    **{**RUN, "steps": 3})
        stylize(content, style, network=net, runtime="cuda", **{**RUN, "steps": 1})  # a step kept for later runs
        with mock.patch.object(graphs, "make_optimizer", out_of_memory), pytest.raises(MemoryLimitError) as oom:
            stylize(content, style, network=net, runtime="cuda", **{**RUN, "size": 48})
        gc.collect()
        assert nan.value.result.steps == 2 and oom.value is not None and not made
    assert make_optimizer is graphs.make_optimizer


def test_a_callback_keeps_its_own_terms_on_the_graph_path(net, content, style) -> None:
    """Every replay refills the graph's output tensors: what a callback keeps must be its own copy, equal to the
    history step for step."""
    kept = []
    with fake_gpu() as mode:
        result = stylize(content, style, network=net, runtime="cuda", callback=lambda p: kept.append(p.terms), **RUN)
    assert mode.replays == RUN["steps"] - graphs.WARMUP
    assert [float(terms["total"]) for terms in kept] == [h["total"] for h in result.history[:-1]]


def test_two_threads_never_capture_at_once(net, content, style) -> None:
    """The explorer's thread and a `stylize` both capture: torch has one capture stream per process, so the second
    waits for the first (each capture holds the door open for the other for 0.5 s; before, both went in)."""
    door = threading.Barrier(2, timeout=0.5)

    def open_door(step):
        try:
            door.wait()  # both threads in nstlib's capture at once, unless nstlib keeps the second out
        except threading.BrokenBarrierError:
            pass
        return capture(step)

    def run(mode, size):
        with mode:
            results[size] = stylize(content, style, network=net, runtime="cuda", **{**RUN, "size": size, "steps": 4})

    results = {}
    with fake_gpu() as mode, _warnings() as messages:
        capture = graphs.capture  # the emulated one
        with mock.patch.object(graphs, "capture", open_door):
            threads = [threading.Thread(target=run, args=(mode, size)) for size in (32, 48)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    assert not messages and mode.captures == 2 and not graphs.FAILED
    assert [r.steps for r in results.values()] == [4, 4]


# ---------------------------------------------------------------- the Gram matrices on the tensor cores


@pytest.mark.parametrize("plan", ["bf16-graph", "fp16-loss-scale"])
def test_a_step_multiplies_bfloat16_maps_into_float32_gram_matrices(plan: str, net, content, style) -> None:
    """Where bfloat16 is native a step's Gram matrix is one bfloat16 product with a float32 result (on the tensor
    cores, and no float32 copy of a map kept for the backward pass); with float16, which could overflow, float32 maps.
    The targets' Gram matrices are computed once, from float32 maps, on either."""
    with fake_gpu(**_plan(plan)[0]) as mode:
        stylize(content, style, network=net, runtime="cuda", **{**RUN, "steps": 1})
    grams = [m for m in mode.matmuls if len(m["shape"]) == 3 and m["shape"][-1] == m["shape"][-2]]
    assert grams and all(m["dtype"] == torch.float32 for m in grams)
    step = {torch.bfloat16} if plan == "bf16-graph" else set()
    assert {t for m in grams for t in m["inputs"]} == {torch.float32, *step}


def test_bfloat16_gram_matrices_shrink_the_memory_kept_for_the_backward_pass(net, content, style) -> None:
    """What autograd keeps for one evaluation besides the weights (distinct storages): the float32 copies of the style
    maps were a quarter of it at 64² (8.3 MB, 6.3 without them) and a third at 128² (25.9 MB, 17.9)."""
    from nstlib.engine.runtime import BFloat16Grams

    def kept(objective, image, grams) -> int:
        weights = {p.untyped_storage().data_ptr() for p in objective.extractor.parameters()}
        storages = {}

        def keep(t):
            if t.untyped_storage().data_ptr() not in weights:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), grams:
            terms = objective(image.clone().requires_grad_(True))
        return sum(storages.values()), terms["total"].item()

    with fake_gpu():
        runtime = Runtime.create("cuda")
        content, style = content.to("cuda"), style.to("cuda")
        objective = Targets.build(runtime.prepare(net), content, [style], Settings()).objective(Settings())
        (before, total), (after, same) = kept(objective, content, nullcontext()), kept(objective, content,
                                                                                         BFloat16Grams())
    assert after < 0.8 * before and same == pytest.approx(total, rel=1e-2)


def test_float16_keeps_the_caffe_vgg16_in_range(vgg16_weights, content, style) -> None:
    """The packaged VGG16 reads pixels in 0-255: in float16 (a T4) its convolutions gave 1e4 and more (1.2e4 at 256²;
    float16 ends at 65504, and no loss scale mends a forward overflow), and up to 11 % of its activation gradients fell
    below float16's smallest normal number (2^-14) at 256² with the initial loss scale 2^16. Run on an input divided by
    256, every map is 256 times smaller inside and its gradient 256 times larger; the terms are the same."""
    largest, gradients = [], []

    def watch(module, args, out):
        largest.append(out.abs().max().item())
        out.register_hook(gradients.append)

    settings = Settings()
    plain = Targets.build(VGGFeatures(settings.layers, vgg16_weights), content, [style], settings).objective(settings)
    image = ((content + style) / 2).requires_grad_(True)
    with fake_gpu(capability=(7, 5)):
        features = Runtime.create("cuda").prepare(VGGFeatures(settings.layers, vgg16_weights))
        objective = Targets.build(features, content.to("cuda"), [style.to("cuda")], settings).objective(settings)
        for conv in (m for m in features.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.register_forward_hook(watch)
        terms = objective(image.to("cuda"))
        (terms["total"].sum() * 2.0**16).backward()
        small = [((g != 0) & (g.abs() < 2.0**-14)).sum().item() / (g != 0).sum().item() for g in gradients]
    assert max(largest) < 65504 / 256 and max(small) < 0.01, (max(largest), max(small))
    want = plain(image)
    for term in ("content", "style", "total"):
        assert terms[term].item() == pytest.approx(want[term].item(), rel=5e-3), term


# ---------------------------------------------------------------- what real GPUs punish: each rule of the fake GPU,
# with a mutation of nstlib that only that rule catches (before the rule, these runs passed)


def _half_grams(mode) -> list[dict]:
    """The Gram matrices (products with a square (B,C,C) result) that came out in less than float32."""
    return [m for m in mode.matmuls if len(m["shape"]) == 3 and m["shape"][-1] == m["shape"][-2]
            and m["dtype"] != torch.float32]


def test_a_static_input_rebound_instead_of_copied_into_is_caught(net, content, style) -> None:
    """The second run borrows the first one's graph; a `load` that rebinds the loss weights instead of copying them
    in would replay the first run's weights on a GPU, while the emulated replay (Python run again) read the new ones."""
    load = graphs.GraphedStep.load

    def rebinding_load(self, objective, start):
        load(self, objective, start)
        self.objective.weights = {k: v.clone() for k, v in objective.weights.items()}  # the mutation

    with fake_gpu():
        stylize(content, style, network=net, runtime="cuda", **RUN)
        stylize(content, style, network=net, runtime="cuda", **RUN)  # borrowed and replayed: fine as it is
        with mock.patch.object(graphs.GraphedStep, "load", rebinding_load), \
                pytest.raises(StaleInput, match=r"step\.objective\.weights\[content\].* moved since the capture"):
            stylize(content, style, network=net, runtime="cuda", style_weight=1e4, **RUN)


def test_an_op_that_syncs_inside_is_refused_in_a_capture(net, content, style) -> None:
    """`torch.linalg.solve` in place of the triangular solves of `SyncFreeLBFGS` checks its result on the host: the
    capture fails and the run goes on eagerly, with the cause in the warning."""
    solve = torch.linalg.solve
    with fake_gpu() as mode, _warnings() as messages:
        with mode.capturing(), pytest.raises(HostSync, match="waits for the GPU"):
            _ = torch.ones(3, device="cuda")[torch.ones(3, device="cuda") > 0]  # a mask as an index: a sync
        with mock.patch.object(torch.linalg, "solve_triangular", lambda a, b, upper: solve(a, b)):  # the mutation
            stylize(content, style, network=net, runtime="cuda", **RUN)
    assert len(messages) == 1 and "HostSync: linalg_solve waits for the GPU" in messages[0], messages


def test_float64_is_refused_on_mps_and_computed_silently_on_cuda(net, content, style) -> None:
    """Loss weights made float64 by NumPy: CUDA computes the total in float64 without a word, MPS has no float64."""
    from nstlib.core.objective import Objective

    build = Objective.__init__

    def numpy_weights(self, targets, settings):
        build(self, targets, settings)
        self.weights = {k: torch.from_numpy(v.cpu().numpy().astype("float64")).to(v.device)  # the mutation
                        for k, v in self.weights.items()}

    with mock.patch.object(Objective, "__init__", numpy_weights):
        with fake_gpu(kind="mps"), pytest.raises(TypeError, match="MPS framework doesn't support float64"):
            stylize(content, style, network=net, runtime="mps", **RUN)
        with fake_gpu():
            assert stylize(content, style, network=net, runtime="cuda", **RUN).steps == RUN["steps"]


def test_every_product_under_autocast_has_the_dtype_cuda_gives_it() -> None:
    """The CPU's autocast keeps `mv` in float32 where CUDA's runs it in bfloat16: the fake GPU says it cannot stand in
    rather than hide the difference. Products are logged with their dtypes."""
    with fake_gpu() as mode:
        a, x = torch.rand(4, 4, device="cuda"), torch.rand(4, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert (a @ a).dtype == torch.bfloat16
            with pytest.raises(AssertionError, match="mv under autocast gave torch.float32 on the CPU where CUDA "
                                                     "gives torch.bfloat16"):
                torch.mv(a, x)
    assert [m["op"] for m in mode.matmuls] == ["matmul", "mv"] and mode.matmuls[0]["autocast"]


def test_a_gram_matrix_in_half_precision_under_autocast_is_caught(net, content, style) -> None:
    """The Gram matrices come out in float32 (a float16 one overflows, a bfloat16 one loses the digits the style term
    compares); moved under autocast, the product log shows them in half precision."""
    from nstlib.core import losses

    gram, dtype = losses.gram_matrix, torch.bfloat16

    def autocast_gram(features):
        with torch.autocast("cuda", dtype=dtype):
            return gram(features)  # the mutation

    with fake_gpu() as mode:
        stylize(content, style, network=net, runtime="cuda", **{**RUN, "steps": 1})
        assert mode.matmuls and not _half_grams(mode)
        with mock.patch.object(losses, "gram_matrix", autocast_gram):
            stylize(content, style, network=net, runtime="cuda", **{**RUN, "steps": 1})
        assert {m["dtype"] for m in _half_grams(mode)} == {dtype}

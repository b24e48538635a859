"""CUDA graphs: `take_step`, captured once per image size and replayed.

At 512² a mixed-precision step on a big GPU is launch-bound: VGG's forward and backward pass are
a few milliseconds of work, the rest is Python and hundreds of small kernels. A CUDA graph records
every kernel of one call of `nstlib.step.take_step` (the objective, its backward pass, the
optimiser's update, the clamp) once; `replay()` then launches them all with one call. What that
asks for, and how it is done:

- the same memory every replay: the image is the graph's own tensor, and the objective reads
  static copies of its targets and of its three loss weights (as (B,) tensors on the device, not
  floats baked into the kernels), which the next run of the same kind overwrites (`load`);
- no host sync inside the step: fused Adam with its step count on the device, or
  `nstlib.lbfgs.SyncFreeLBFGS`; the loss terms stay in the graph's output tensors, and the
  `Monitor` copies them to the host every `log_every` steps, where it also checks for NaN;
- warm-up before capture: the first `WARMUP` steps of a new graph run eagerly on a side stream
  (they are the run's real first steps), then the step is captured and replayed from then on;
- one graph per kind of run: a process-level cache keeps the last `GRAPH_CACHE` of them, keyed by
  everything a capture bakes in (the network, the shapes, the per-layer and blend weights, the
  optimiser's settings). A later run of the same kind (other loss weights, targets or start image,
  e.g. the explorer's next slider position) copies those in, zeroes the optimiser's state and
  replays at once. A run borrows its step from the cache and returns it when it ends normally,
  so two threads never share one; `release_graphs()` frees them all. A new step that runs out of
  memory while other sizes' graphs are cached frees those and tries the same step again;
- a fallback that loses nothing: if the capture or the first replay fails (or `torch.compile`,
  see `Runtime.compiled`), `runtime.fall_back` warns once and turns graphs off for the process,
  and this run goes on eagerly from the current image with the same optimiser. A failed capture
  or launch runs no kernel, so the image and the optimiser are as the last step left them.

Things outside the step still work as on the eager path: the callback, frames and the NaN
rollback see the image between replays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from nstlib.losses import Objective
from nstlib.memory import release_memory
from nstlib.runtime import Runtime, fall_back, is_out_of_memory
from nstlib.settings import Settings
from nstlib.step import Terms, make_optimizer, take_step

#: Eager steps before a new step is captured (torch's own examples warm up with 3).
WARMUP = 3
#: Captured steps kept for later runs; each holds its image size's activations on the GPU.
GRAPH_CACHE = 4
WEIGHTS = ("content_weight", "style_weight", "tv_weight")

_cache: OrderedDict[tuple, GraphedStep] = OrderedDict()
_lock = threading.Lock()


def _targets(objective: Objective) -> list[torch.Tensor]:
    """The objective's target tensors in a fixed order: content features, style Grams, masks, the scales computed
    from them."""
    tensors = list(objective.content_targets.values())
    for _, grams in objective.style_targets:
        tensors += grams.values()
    for masks in objective.style_masks or []:
        tensors += masks.values()
    return tensors + objective.target_scales()


def _kind(objective: Objective, image: torch.Tensor, settings: Settings, runtime: Runtime) -> tuple:
    """What a captured step bakes in: network, shapes, layer and blend weights, optimiser settings."""
    return (id(objective.extractor), tuple(image.shape), str(image.device), tuple(objective.content_layers.items()),
            tuple(objective.style_layers.items()), tuple(alpha for alpha, _ in objective.style_targets),
            objective.style_masks is None, objective.loss, tuple(tuple(t.shape) for t in _targets(objective)),
            settings.optimizer, settings.lr, settings.history_size, settings.max_step, runtime.compile_model)


def _static_copy(objective: Objective, batch: int) -> Objective:
    """`objective` with targets of its own and its loss weights as (B,) device tensors (filled by `load`)."""
    def own(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: t.clone() for name, t in tensors.items()}

    device = next(iter(objective.content_targets.values())).device
    return Objective(objective.extractor, own(objective.content_targets),
                     [(alpha, own(grams)) for alpha, grams in objective.style_targets],
                     objective.content_layers, objective.style_layers,
                     *(torch.zeros(batch, device=device) for _ in WEIGHTS),
                     style_masks=None if objective.style_masks is None else [own(m) for m in objective.style_masks],
                     loss=objective.loss, content_tv=objective.content_tv)


def capture(step: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Record the kernels of one call of `step` in a CUDA graph: (the graph, the call's output tensors).

    Nothing runs yet: each `graph.replay()` runs the recorded kernels, and refills those outputs."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = step()
    return graph, outputs


class GraphedStep:
    """`take_step` for one kind of run: eager for `WARMUP` steps, then a replayed CUDA graph.

    Calling it takes one step of `self.image` (B,3,H,W) in [0,1] and returns what `take_step`
    returns: the loss terms {name: (B,)} at the image before the step (once captured, the graph's
    output tensors: read or copy them before the next call) and the evaluation count.
    """

    def __init__(self, objective: Objective, image: torch.Tensor, settings: Settings, runtime: Runtime) -> None:
        self.objective = _static_copy(objective, image.shape[0])
        self.evaluate = runtime.compiled(self.objective)
        self.image = image.detach().clone().requires_grad_(True)
        self.optimizer = make_optimizer(self.image, settings, capturable=True)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.terms: tuple[Terms, int] = ({}, 0)
        self.eager_steps = self.replays = 0
        self.eager = False  # the capture or its first replay failed: every step runs eagerly

    def load(self, objective: Objective, start: torch.Tensor) -> None:
        """Begin a run: copy in `objective`'s targets and weights and the `start` image; zero the optimiser."""
        with torch.no_grad():
            for mine, theirs in zip(_targets(self.objective), _targets(objective), strict=True):
                mine.copy_(theirs)
            for name in WEIGHTS:
                getattr(self.objective, name).copy_(torch.as_tensor(getattr(objective, name)))
            self.image.copy_(start)
            for state in self.optimizer.state.values():  # all zeros: a fresh Adam or SyncFreeLBFGS
                for value in state.values():
                    value.zero_()

    def step(self) -> tuple[Terms, int]:
        """`take_step` on this step's own objective, image and optimiser."""
        return take_step(self.evaluate, self.image, self.optimizer)

    def __call__(self) -> tuple[Terms, int]:
        with torch.cuda.device(self.image.device):  # the image's GPU is current for capture and streams (cuda:1)
            try:
                return self._next()
            except RuntimeError as e:
                if not is_out_of_memory(e) or not release_graphs():
                    raise
                release_memory(e, self.image.device)  # the other sizes' graphs are gone: try this step once more
                return self._next()

    def _next(self) -> tuple[Terms, int]:
        if self.graph is None and not self.eager and self.eager_steps >= WARMUP:
            try:
                self.graph, self.terms = capture(self.step)
            except Exception as e:
                self._fall_back(e)
        if self.graph is not None:
            try:
                self.graph.replay()
            except Exception as e:
                if self.replays:  # it has replayed before: this is not a capture problem
                    raise
                self._fall_back(e)
            else:
                self.replays += 1
                return self.terms
        if self.eager:
            return self.step()
        self.eager_steps += 1
        main, side = torch.cuda.current_stream(), torch.cuda.Stream()
        side.wait_stream(main)  # after whatever the main stream did with the last step's terms
        with torch.cuda.stream(side):
            terms = self.step()
        main.wait_stream(side)
        return terms

    def _fall_back(self, error: Exception) -> None:
        if is_out_of_memory(error):
            raise error
        fall_back("cuda_graph", error)
        self.graph, self.eager = None, True


@contextmanager
def graphed_step(objective: Objective, image: torch.Tensor, settings: Settings,
                 runtime: Runtime) -> Iterator[GraphedStep]:
    """Borrow the cached step of this kind of run (or a new one), loaded with `objective` and the
    start `image`; it goes back to the cache if the block ends without an error and it is still graphed."""
    kind = _kind(objective, image, settings, runtime)
    with _lock:
        step = _cache.pop(kind, None)
    step = step or GraphedStep(objective, image, settings, runtime)
    step.load(objective, image)
    yield step
    if step.eager:
        return
    with _lock:
        _cache[kind] = step
        while len(_cache) > GRAPH_CACHE:
            _cache.popitem(last=False)


def release_graphs() -> int:
    """Forget every cached step (their graphs' memory returns to the allocator once unreferenced);
    returns how many there were."""
    with _lock:
        count = len(_cache)
        _cache.clear()
    return count

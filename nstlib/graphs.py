"""CUDA graphs: one optimisation step, captured once per image size and replayed (issue #13).

At 512² a mixed-precision step on a big GPU is launch-bound: VGG's forward and backward pass are
a few milliseconds of work, the rest is Python and hundreds of small kernels. A CUDA graph records
every kernel of one step (the objective, its backward pass, the optimiser's update, the clamp)
once; `replay()` then launches them all with one call. What that asks for, and how it is done:

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
  so two threads never share one; `release_graphs()` frees them all (done on out of memory).

Things outside the step still work as on the eager path: the callback, frames and the NaN
rollback see the image between replays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from nstlib.losses import Objective
from nstlib.settings import Settings

#: Eager steps before a new step is captured (torch's own examples warm up with 3).
WARMUP = 3
#: Captured steps kept for later runs; each holds its image size's activations on the GPU.
GRAPH_CACHE = 4
WEIGHTS = ("content_weight", "style_weight", "tv_weight")

_cache: OrderedDict[tuple, GraphedStep] = OrderedDict()
_lock = threading.Lock()


def _targets(objective: Objective) -> list[torch.Tensor]:
    """The objective's target tensors in a fixed order: content features, style Grams, masks."""
    tensors = list(objective.content_targets.values())
    for _, grams in objective.style_targets:
        tensors += grams.values()
    for masks in objective.style_masks or []:
        tensors += masks.values()
    return tensors


def _kind(objective: Objective, image: torch.Tensor, settings: Settings, compile_model: bool) -> tuple:
    """What a captured step bakes in: network, shapes, layer and blend weights, optimiser settings."""
    return (id(objective.extractor), tuple(image.shape), str(image.device), tuple(objective.content_layers.items()),
            tuple(objective.style_layers.items()), tuple(alpha for alpha, _ in objective.style_targets),
            objective.style_masks is None, tuple(tuple(t.shape) for t in _targets(objective)),
            settings.optimizer, settings.lr, settings.history_size, settings.max_step, compile_model)


def _static_copy(objective: Objective, batch: int) -> Objective:
    """`objective` with targets of its own and its loss weights as (B,) device tensors (filled by `load`)."""
    def own(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: t.clone() for name, t in tensors.items()}

    device = next(iter(objective.content_targets.values())).device
    return Objective(objective.extractor, own(objective.content_targets),
                     [(alpha, own(grams)) for alpha, grams in objective.style_targets],
                     objective.content_layers, objective.style_layers,
                     *(torch.zeros(batch, device=device) for _ in WEIGHTS),
                     style_masks=None if objective.style_masks is None else [own(m) for m in objective.style_masks])


class GraphedStep:
    """One optimisation step for one kind of run: eager for `WARMUP` steps, then a replayed CUDA graph.

    Calling it takes one step of `self.image` (B,3,H,W) in [0,1] and returns the loss terms
    {name: (B,)} at the image before the step (once captured, the graph's output tensors: read
    or copy them before the next call).
    """

    def __init__(self, objective: Objective, image: torch.Tensor,
                 optimizer: Callable[[torch.Tensor], torch.optim.Optimizer], compile_model: bool) -> None:
        self.objective = _static_copy(objective, image.shape[0])
        self.evaluate = torch.compile(self.objective, dynamic=False) if compile_model else self.objective
        self.image = image.detach().clone().requires_grad_(True)
        self.optimizer = optimizer(self.image)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.terms: dict[str, torch.Tensor] = {}
        self.eager_steps = 0

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

    def step(self) -> dict[str, torch.Tensor]:
        """The step itself, as the graph records it: objective, backward, update, clamp."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.evaluate(self.image)
        terms["total"].sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            self.image.clamp_(0, 1)
        return {name: value.detach() for name, value in terms.items()}

    def __call__(self) -> dict[str, torch.Tensor]:
        with torch.cuda.device(self.image.device):
            if self.graph is None and self.eager_steps >= WARMUP:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                    self.terms = self.step()
            if self.graph is not None:
                self.graph.replay()
                return self.terms
            self.eager_steps += 1
            main, side = torch.cuda.current_stream(), torch.cuda.Stream()
            side.wait_stream(main)  # after whatever the main stream did with the last step's terms
            with torch.cuda.stream(side):
                terms = self.step()
            main.wait_stream(side)
            return terms


@contextmanager
def graphed_step(objective: Objective, image: torch.Tensor, settings: Settings,
                 optimizer: Callable[[torch.Tensor], torch.optim.Optimizer],
                 compile_model: bool = False) -> Iterator[GraphedStep]:
    """Borrow the cached step of this kind of run (or a new one), loaded with `objective` and the
    start `image`; it goes back to the cache if the block ends without an error."""
    kind = _kind(objective, image, settings, compile_model)
    with _lock:
        step = _cache.pop(kind, None)
    step = step or GraphedStep(objective, image, optimizer, compile_model)
    step.load(objective, image)
    yield step
    with _lock:
        _cache[kind] = step
        while len(_cache) > GRAPH_CACHE:
            _cache.popitem(last=False)


def release_graphs() -> None:
    """Forget every cached step (their graphs' memory returns to the allocator once unreferenced)."""
    with _lock:
        _cache.clear()

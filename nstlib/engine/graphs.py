"""CUDA graphs: `take_step`, captured once per kind of run and replayed.

At 512² a mixed-precision step on a big GPU is launch-bound: hundreds of small kernels, which a graph replays with one
call. That asks for the same memory every replay (the graph owns its image and a copy of the objective, into which a
later run of the same kind copies its tensors: `load`), no host sync inside the step (fused Adam or `SyncFreeLBFGS`,
float16's loss scale on the device), and one graph per kind of run (`_kind`, found by walking the objective's state,
so a new field of `Objective` needs nothing here). A failed capture or first replay warns once; the run goes on eagerly.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from nstlib.core.loop import Backward, Objective, Terms, make_optimizer, plain_backward, take_step
from nstlib.core.settings import Settings
from nstlib.engine.memory import is_out_of_memory

#: Eager steps (on a side stream) before a new step is captured (torch's own examples warm up with 3).
WARMUP = 3
#: Captured steps kept for later runs, of one network at a time; each holds its image size's activations on the GPU.
GRAPH_CACHE = 4
#: {"cuda_graph": the cause} once a capture failed in this process.
FAILED: dict[str, str] = {}

_cache: OrderedDict[tuple, GraphedStep] = OrderedDict()
_lock = threading.Lock()  # the cache's
_capturing = threading.Lock()  # one capture at a time: torch captures on one shared stream


def _leaves(value: Any) -> Iterator[Any]:
    """Everything `value` holds, in a fixed order, through dicts (keys too), lists and tuples."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _state(objective: Objective) -> list[Any]:
    """The objective's state (its public attributes; the network is a submodule, not one of them)."""
    return list(_leaves({k: v for k, v in vars(objective).items() if not k.startswith("_")}))


def _kind(objective: Objective, image: torch.Tensor, settings: Settings) -> tuple:
    """What a captured step bakes in: the network (the module and its weights' addresses), every shape, the values
    that are not tensors, the optimiser."""
    net = objective.extractor
    network = id(net), *(t.data_ptr() for t in [*net.parameters(), *net.buffers()])
    state = tuple((tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else x for x in _state(objective))
    return (network, tuple(image.shape), str(image.device), state, settings.optimizer, settings.lr,
            settings.history_size, settings.max_step)


def capture(step: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Record the kernels of one call of `step` in a CUDA graph: (the graph, the output tensors each replay refills)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = step()
    return graph, outputs


class GraphedStep:
    """`take_step` for one kind of run on its own `image` (B,3,H,W): eager for `WARMUP` steps, then a replayed graph."""

    def __init__(self, objective: Objective, image: torch.Tensor, settings: Settings,
                 backward: Backward = plain_backward) -> None:
        self.objective = copy.deepcopy(objective, {id(objective.extractor): objective.extractor})
        self.image = image.detach().clone().requires_grad_(True)
        self.optimizer = make_optimizer(self.image, settings, capturable=True)
        self.backward = backward  # float16's loss scale (`nstlib.engine.runtime.LossScale.backward`), or plain
        self.graph: torch.cuda.CUDAGraph | None = None
        self.terms: tuple[Terms, int] = ({}, 0)
        self.eager_steps = self.replays = 0
        self.eager = False  # the capture or its first replay failed: every step runs eagerly

    def load(self, objective: Objective, start: torch.Tensor) -> None:
        """Begin a run: copy in `objective`'s tensors and `start`; zero the optimiser's and the loss scale's state."""
        with torch.no_grad():
            for mine, theirs in zip(_state(self.objective), _state(objective), strict=True):
                if isinstance(mine, torch.Tensor):
                    mine.copy_(theirs)
            self.image.copy_(start)
            scale = getattr(self.backward, "__self__", None)  # the loss scale whose method it is, if any
            for state in [*self.optimizer.state.values(), vars(scale) if scale is not None else {}]:
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        value.zero_()

    def step(self) -> tuple[Terms, int]:
        return take_step(self.objective, self.image, self.optimizer, self.backward)

    def __call__(self) -> tuple[Terms, int]:
        with torch.cuda.device(self.image.device):  # the image's GPU is current for capture and streams (cuda:1)
            if self.graph is None and not self.eager and self.eager_steps >= WARMUP:
                try:
                    with _capturing:
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
        """The capture or its first replay failed: warn once, and run eagerly here and in every later run."""
        if is_out_of_memory(error):
            raise error
        if not FAILED:
            FAILED["cuda_graph"] = f"{type(error).__name__}: {error}".splitlines()[0]
            warnings.warn(f"CUDA graph capture failed ({FAILED['cuda_graph']}); this run goes on eagerly from where it "
                          "was, and so does every later run in this process", RuntimeWarning, stacklevel=2)
        self.graph, self.eager = None, True


@contextmanager
def graphed_step(objective: Objective, image: torch.Tensor, settings: Settings,
                 backward: Backward = plain_backward) -> Iterator[GraphedStep]:
    """Borrow the cached step of this kind of run (or a new one) loaded with `objective` and `image`; it goes back to
    the cache if the block ends without an error and still graphed, and the other networks' steps leave it (no later
    run would find them, but they would hold their memory)."""
    kind = _kind(objective, image, settings)
    with _lock:
        step = _cache.pop(kind, None)
    step = step or GraphedStep(objective, image, settings, backward)
    step.load(objective, image)
    yield step
    if step.eager:
        return
    with _lock:
        for other in [k for k in _cache if k[0] != kind[0]]:
            del _cache[other]
        _cache[kind] = step
        while len(_cache) > GRAPH_CACHE:
            _cache.popitem(last=False)


def release_graphs() -> None:
    """Forget every cached step (their memory returns to the allocator once unreferenced)."""
    with _lock:
        _cache.clear()

"""The sync-free L-BFGS: torch's iterates without bounds, no host sync, skipped pairs, and the box [0,1]."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch.overrides import TorchFunctionMode

from nstlib.core.errors import ParameterError
from nstlib.core.lbfgs import SyncFreeLBFGS
from nstlib.core.objective import Targets
from nstlib.core.settings import Settings

Function = Callable[[torch.Tensor], torch.Tensor]


def iterates(optimizer: torch.optim.Optimizer, x: torch.Tensor, f: Function, steps: int,
             clamp: bool = False) -> torch.Tensor:
    """(steps, *x.shape): x after every step of `optimizer` on f (clamped to [0,1] after each, like the loop)."""
    out = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
        if clamp:
            with torch.no_grad():
                x.clamp_(0, 1)
        out.append(x.detach().clone())
    return torch.stack(out)


def both(f: Function, start: torch.Tensor, steps: int, m: int, clamp: bool = False,
         bounds: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The iterates of torch.optim.LBFGS(max_iter=1, no line search) and of SyncFreeLBFGS from `start`."""
    x, y = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    theirs = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=m, line_search_fn=None)
    ours = SyncFreeLBFGS([y], lr=1, history_size=m, bounds=bounds)
    return iterates(theirs, x, f, steps, clamp), iterates(ours, y, f, steps, clamp)


def quadratic(seed: int, n: int, centre: float = 1.0) -> Function:
    """0.5 (x-c)ᵀA(x-c) + 0.1 Σx⁴ (float64; A positive definite, c ~ N(0.5, centre²))."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = a @ a.T / n + 0.05 * torch.eye(n, dtype=torch.float64)
    c = 0.5 + centre * torch.randn(n, generator=gen, dtype=torch.float64)
    return lambda x: 0.5 * (x - c) @ a @ (x - c) + (0.1 * (x**4).sum() if centre == 1.0 else 0.0)


@pytest.mark.parametrize("m", [3, 10])
def test_same_iterates_as_torch_on_a_smooth_convex_function(m: int) -> None:
    """30 steps: with m = 3 the ring of pairs wraps around many times."""
    theirs, ours = both(quadratic(0, 40), torch.zeros(40, dtype=torch.float64), 30, m)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_pairs_without_positive_curvature_are_skipped_as_torch_skips_them() -> None:
    """A double well Σ(x²-1)² from near 0, where the curvature is negative: torch keeps fewer pairs than steps."""
    f = lambda x: ((x**2 - 1) ** 2).sum() + 0.3 * x.sum()  # noqa: E731
    start = 0.05 * torch.linspace(-1, 1, 12, dtype=torch.float64)
    x = start.clone().requires_grad_(True)
    theirs = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=5, line_search_fn=None)
    y = start.clone().requires_grad_(True)
    ours = SyncFreeLBFGS([y], lr=1, history_size=5)
    skipped = 0
    for _ in range(12):
        kept = len(theirs.state[x].get("old_dirs", []))
        a, b = iterates(theirs, x, f, 1), iterates(ours, y, f, 1)
        skipped += len(theirs.state[x]["old_dirs"]) == kept and kept < 5
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    assert skipped >= 2  # (the first step makes no pair)
    assert int(ours.state[y]["valid"].sum()) == len(theirs.state[x]["old_dirs"])


def test_same_iterates_as_torch_on_the_style_objective(vgg, content, style) -> None:
    """The real objective (random VGG19, 32 px, no clamp) in float64, so that rounding cannot hide a
    difference: 8 steps, equal to 1e-12. (In float32 the two drift apart by rounding, 1e-5 after two
    steps and 1e-2 after eight: L-BFGS amplifies it, and so does torch's from run to run.)"""
    net = copy.deepcopy(vgg).double()
    small = [torch.nn.functional.interpolate(t, size=(32, 32), mode="area").double() for t in (content, style)]
    objective = Targets.build(net, small[0], [small[1]], Settings()).objective(Settings())
    theirs, ours = both(lambda x: objective(x)["total"].sum(), (small[0] + small[1]) / 2, 8, 5)
    assert objective(theirs[-1])["total"].item() < objective(theirs[0])["total"].item() / 5  # it did optimise
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_the_box_does_not_poison_the_history() -> None:
    """Optimum outside [0,1]: torch + clamp stalls at the walls; with bounds=(0, 1) (the projected
    gradient) the constrained optimum, found by 5000 projected-gradient steps, is reached."""
    f = quadratic(1, 50, centre=1.5)
    x = torch.full((50,), 0.5, dtype=torch.float64)
    for _ in range(5000):
        x = x.requires_grad_(True)
        (grad,) = torch.autograd.grad(f(x), x)
        x = (x.detach() - 0.1 * grad).clamp(0, 1)
    best = f(x).item()
    theirs, ours = both(f, torch.full((50,), 0.5, dtype=torch.float64), 40, 10, clamp=True, bounds=(0.0, 1.0))
    assert f(ours[-1]).item() == pytest.approx(best, rel=1e-9)
    assert f(theirs[-1]).item() > best + 0.1
    assert ours.min() >= 0 and ours.max() <= 1


def test_max_step_bounds_every_change_and_still_reaches_the_minimum() -> None:
    """The trust region: no value moves more than max_step in one step, and since it only shortens
    steps (the pairs remember the shortened step), the iterates still converge to the minimum of
    0.5 (x - c)ᵀA(x - c), c = 0.5 everywhere, from x = 0, where uncapped steps are longer than 0.1."""
    f = quadratic(3, 30, centre=0.0)
    start = torch.zeros(30, dtype=torch.float64)
    x = start.clone().requires_grad_(True)
    path = torch.cat([start[None], iterates(SyncFreeLBFGS([x], history_size=10, max_step=0.1), x, f, 60)])
    assert (path.diff(dim=0).abs().max(dim=1).values <= 0.1 + 1e-12).all()
    assert path.diff(dim=0).abs().max() == pytest.approx(0.1)  # the cap was active
    assert f(path[-1]).item() < 1e-9


def test_a_step_never_reads_a_value_on_the_host() -> None:
    """On the meta device every tensor has a shape and no values: .item(), bool(tensor) and any
    Python branch on a value raise. SyncFreeLBFGS steps there; torch's L-BFGS cannot."""
    x = torch.empty(2, 3, 8, 8, device="meta", requires_grad=True)
    x.grad = torch.empty_like(x)
    ours = SyncFreeLBFGS([x], history_size=4, bounds=(0.0, 1.0))
    for _ in range(3):
        ours.step()
    with pytest.raises(RuntimeError, match="meta"):
        torch.optim.LBFGS([x], max_iter=1).step(lambda: x.sum())


def test_a_step_reads_the_history_twice() -> None:
    """The history, 2(m+1) image-sized buffers, is the step's memory traffic (0.32 GB a pass at 512², m = 50): one
    product with the new pair and the gradient together (SᵀY, YᵀY, Sᵀg, Yᵀg), one for the direction."""
    x = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    optimizer = SyncFreeLBFGS([x], history_size=4)
    history = optimizer.state[x]["pairs"].untyped_storage().data_ptr()
    reads = []

    class Products(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            products = (torch.mm, torch.Tensor.mm, torch.mv, torch.Tensor.mv, torch.matmul, torch.Tensor.matmul)
            if func in products and any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == history
                                        for a in args):
                reads.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Products():
        iterates(optimizer, x, quadratic(0, 40), 5)
    assert len(reads) == 2 * 5, reads


def test_zeroed_state_is_a_fresh_optimiser() -> None:
    """What `nstlib.engine.graphs` relies on to reuse a captured step: zeroing every state tensor starts afresh."""
    f = quadratic(2, 20)
    start = torch.zeros(20, dtype=torch.float64)
    x = start.clone().requires_grad_(True)
    reused = SyncFreeLBFGS([x], history_size=4)
    iterates(reused, x, f, 7)
    for value in reused.state[x].values():
        value.zero_()
    with torch.no_grad():
        x.copy_(start)
    _, fresh = both(f, start, 5, 4)
    torch.testing.assert_close(iterates(reused, x, f, 5), fresh, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "match"), [({"lr": 0.0}, "lr=0.0"), ({"history_size": 0}, "history_size=0"),
                                               ({"bounds": (1.0, 0.0)}, "bounds"), ({"max_step": 0.0}, "max_step")])
def test_bad_arguments_name_the_parameter(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        SyncFreeLBFGS([torch.zeros(3, requires_grad=True)], **kwargs)
    with pytest.raises(ParameterError, match="params"):
        SyncFreeLBFGS([torch.zeros(3), torch.zeros(3)])

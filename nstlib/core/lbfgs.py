"""L-BFGS without host syncs, for pixels in a box: the iterates of `torch.optim.LBFGS(max_iter=1)`, in tensor ops.

torch's L-BFGS decides with Python `if`s on tensor values and keeps its history in Python lists, so every step waits
for the GPU and a CUDA graph cannot hold it. Here the decisions are `torch.where`s and the m pairs live in a ring of
m + 1 preallocated slots. A step, gradient g_k at x_k:

1. the pair s = t·d (the last step), y = g_k - g_{k-1} joins the history only if y·s > 1e-10 (torch's rule);
2. d = -H g_k, H_0 = γI with γ = s·y / y·y of the newest pair, in the compact form of Byrd, Nocedal & Schnabel (1994):
   H g = γg + S p - γY w, w = R⁻¹Sᵀg, p = R⁻ᵀ((D + γYᵀY) w - γYᵀg), R the upper triangle of SᵀY, D its diagonal;
3. x_{k+1} = x_k + t·d, t = lr·min(1, 1/|g|₁) on the first step and lr after it; never uphill.

The box [0,1]: the direction comes from the projected gradient, zero where a pixel sits on a bound and the gradient
pushes it out (Kim, Sra & Dhillon 2010); torch's directions keep pushing there, and the clamp stalls it.
The trust region `max_step`: no value moves more than that in one step. Without it the first pair, from a tiny first
step, gives a huge γ, and on Gatys' absolute objective the second step threw the pixels to the walls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from nstlib.core.errors import ParameterError
from nstlib.core.settings import check_number

#: A pair joins the history only if y·s exceeds this (torch.optim.LBFGS's threshold).
CURVATURE_EPS = 1e-10
#: torch.optim.LBFGS's defaults: no step below this gradient (max norm) or directional derivative.
TOLERANCE_GRAD = 1e-7
TOLERANCE_CHANGE = 1e-9


class SyncFreeLBFGS(torch.optim.Optimizer):
    """L-BFGS for one tensor (the image), with no host sync in `step` (see the module docstring).

    Args:
        params: one contiguous float32 (or float64) tensor, e.g. ``[image]`` with image (B,3,H,W) in [0,1].
        lr: step length after the first step (1 is the quasi-Newton step).
        history_size: m, the number of (s, y) pairs kept: 2(m+1) buffers the size of the image.
        bounds: the box (low, high) the caller clamps to after a step (the pixels: (0, 1)), or None.
        max_step: the most any value may change in one step (a trust region), or None for no limit.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.0, history_size: int = 50,
                 bounds: tuple[float, float] | None = None, max_step: float | None = None) -> None:
        params = list(params)
        if len(params) != 1 or not params[0].is_contiguous() or not params[0].is_floating_point():
            raise ParameterError("params: SyncFreeLBFGS optimises one contiguous float tensor (the image)")
        if params[0].dtype not in (torch.float32, torch.float64):  # its triangular solves have no half kernels
            raise ParameterError(f"params: SyncFreeLBFGS needs a float32 or float64 image, not {params[0].dtype}; "
                                 "keep the image in float32 (mixed precision is for the network)")
        check_number("lr", lr, above=0)
        check_number("history_size", history_size, whole=True, low=1)
        check_number("max_step", max_step, above=0, allow_none=True)
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ParameterError(f"bounds={bounds!r}: give (low, high) with low < high, or None")
        super().__init__(params, {"lr": lr, "history_size": history_size, "bounds": bounds, "max_step": max_step})
        x = params[0].detach().view(-1)
        slots = history_size + 1
        # All zeros is the fresh state (`nstlib.engine.graphs` resets a cached optimiser by zeroing it).
        self.state[params[0]] = {
            "pairs": x.new_zeros(2, slots, x.numel()),  # [0]: s, [1]: y, one slot per row
            "sy": x.new_zeros(slots, slots),  # sy[i, j] = s_i·y_j
            "yy": x.new_zeros(slots, slots),  # yy[i, j] = y_i·y_j
            "valid": torch.zeros(slots, dtype=torch.bool, device=x.device),
            "free": torch.zeros((), dtype=torch.long, device=x.device),  # the free slot
            "steps": torch.zeros((), dtype=torch.long, device=x.device),  # steps taken
            "last_step": torch.zeros_like(x),  # t·d of the last step, as asked (before any clamp)
            "prev_g": torch.zeros_like(x),
        }

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One L-BFGS step from the gradient in the image's .grad (`closure` first, if given, computes it)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        (param,) = group["params"]
        state = self.state[param]
        x, grad = param.view(-1), param.grad.reshape(-1)
        low, high = group["bounds"] or (-torch.inf, torch.inf)
        walls = ((x <= low) & (grad > 0)) | ((x >= high) & (grad < 0))  # on a bound, and descent pushes out
        g = torch.where(walls, 0.0, grad)  # the projected gradient
        live = g.abs().max() > TOLERANCE_GRAD
        first = state["steps"] == 0
        history_g = self._remember(state, state["last_step"], grad - state["prev_g"], g, live & ~first)
        d = torch.where(walls, 0.0, -self._inverse_hessian_times(state, g, history_g))
        t = torch.where(first, group["lr"] * torch.clamp(1 / g.abs().sum(), max=1.0), group["lr"])
        step = torch.where(live & (torch.dot(g, d) < -TOLERANCE_CHANGE), t, 0.0) * d  # none uphill
        if group["max_step"] is not None:
            step = step * torch.clamp(group["max_step"] / step.abs().max().clamp_min(1e-30), max=1.0)
        state["last_step"].copy_(torch.where(live, step, state["last_step"]))
        state["prev_g"].copy_(torch.where(live, grad, state["prev_g"]))
        x.add_(step)  # the caller clamps x to the box (`nstlib.core.loop.take_step`)
        state["steps"].add_(live.long())
        return loss

    @staticmethod
    def _remember(state: dict[str, torch.Tensor], s: torch.Tensor, y: torch.Tensor, g: torch.Tensor,
                  usable: torch.Tensor) -> torch.Tensor:
        """Write (s, y) into the free slot and update SᵀY and YᵀY; keep it if usable and y·s > CURVATURE_EPS.
        Returns the (2, m+1) products s_i·g and y_i·g of every slot, from the same pass over the history."""
        pairs, free = state["pairs"], state["free"]
        slots = pairs.shape[1]
        pairs.index_copy_(1, free.view(1), torch.stack([s, y]).unsqueeze(1))
        products = pairs.view(2 * slots, -1).mm(torch.stack([s, y, g], 1)).view(2, slots, 3)
        s_y, y_s, y_y = products[0, :, 1], products[1, :, 0], products[1, :, 1]  # s_i·y, y_i·s, y_i·y
        here = torch.arange(slots, device=free.device) == free  # one-hot: the free slot
        # row `free` of SᵀY is s·y_j, its column s_i·y; YᵀY is symmetric
        sy, yy = state["sy"], state["yy"]
        sy.copy_(torch.where(here[:, None], y_s[None, :], torch.where(here[None, :], s_y[:, None], sy)))
        yy.copy_(torch.where(here[:, None], y_y[None, :], torch.where(here[None, :], y_y[:, None], yy)))
        accept = usable & (torch.dot(s, y) > CURVATURE_EPS)
        valid = torch.where(here, accept, state["valid"])
        free.copy_(torch.where(accept, (free + 1) % slots, free))
        state["valid"].copy_(valid & (torch.arange(slots, device=free.device) != free))  # the oldest pair goes
        return products[:, :, 2]

    @staticmethod
    def _inverse_hessian_times(state: dict[str, torch.Tensor], g: torch.Tensor,
                               history_g: torch.Tensor) -> torch.Tensor:
        """H g in the compact form (module docstring), with the pairs sorted oldest to newest; `history_g` holds the
        (2, m+1) products s_i·g and y_i·g by slot."""
        pairs, free = state["pairs"], state["free"]
        slots = pairs.shape[1]
        order = (free + 1 + torch.arange(slots, device=free.device)) % slots  # oldest ... newest, free slot
        valid = state["valid"][order]
        both = valid[:, None] & valid[None, :]
        sy = state["sy"][order][:, order]
        yy = torch.where(both, state["yy"][order][:, order], 0.0)
        newest = slots - 2  # the slot before the free one, in this order
        gamma = torch.where(valid[newest], sy[newest, newest] / yy[newest, newest], 1.0)
        s_g, y_g = torch.where(valid, history_g[:, order], 0.0)
        r = torch.where(both, sy, 0.0).triu() + torch.diag((~valid).to(sy.dtype))  # 1 on a free diagonal
        w = torch.linalg.solve_triangular(r, s_g[:, None], upper=True)[:, 0]
        rhs = torch.where(valid, sy.diagonal(), 0.0) * w + gamma * (yy.mv(w) - y_g)
        p = torch.linalg.solve_triangular(r.T, rhs[:, None], upper=False)[:, 0]
        coefficients = torch.zeros_like(pairs[:, :, 0]).index_copy_(1, order, torch.stack([p, -gamma * w]))
        return gamma * g + coefficients.view(-1) @ pairs.view(2 * slots, -1)

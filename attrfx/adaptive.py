"""Adaptive path integration that stops when completeness holds (``n_steps="auto"``).

A path method integrates a gradient along ``γ(α) = b + α(x − b)``. Its
completeness integrand, the scalar ``φ(α) = Σᵢ ∂Φ/∂xᵢ(γ(α))·(xᵢ − bᵢ) = dΦ(γ(α))/dα``
(``Φ`` the explained value: an output ``F`` or a neuron ``n``), has a known
integral on *every* piece of the path::

    ∫ₐᶜ φ(α) dα = Φ(γ(c)) − Φ(γ(a)),

and ``Φ(γ(α))`` comes free with the forward pass of every gradient
evaluation. So the quadrature error of each piece is *measured*, not
estimated, and the adaptive scheme refines exactly where completeness fails:

* :func:`adaptive_integrate` (integrated gradients, neuron conductance) keeps,
  per example, a partition of [0, 1] into panels whose ends are 0, 1 or
  evaluated nodes; each panel integrates with the interpolatory rule on the
  nodes it holds (:func:`~attrfx.quadrature.interpolatory_rule`), and its error
  is exact. It starts with one panel holding the 8 Gauss–Legendre nodes of
  :func:`~attrfx.quadrature.gauss_kronrod_patterson` level 0 and refines the
  panels with the largest error. A panel on a nested ladder whose error looks
  like a smooth integrand's (see :func:`_next_level`: spread over the panel,
  not a missed feature, and either still unresolved or falling fast) moves up
  a level (8 → 17 → 35 → 71 nodes, every old node kept), which on smooth
  integrands costs about what Gauss–Legendre costs for the same gap. Any other
  panel is split around its worst sub-gap (the gap between two known points
  whose exact change ``ΔΦ`` the trapezoid misses most); that sub-gap becomes a
  panel of its own with 2 Gauss–Legendre nodes and a ladder of its own
  (2 → 5 → 11 → 23). Every node ever evaluated keeps contributing. Since Gauss
  nodes crowd the ends of a gap, repeated splits grade geometrically towards
  a narrow feature at an endpoint (e.g. LayerNorm's ε at α ≈ 1e-4), and a
  peak that a split isolates is then resolved at high order on its own panel;
  ReLU networks, whose integrand is a staircase, are refined by splits.
* :func:`adaptive_differences` (layer conductance) refines the Stieltjes sum
  ``Σₛ ½(gₛ + gₛ₊₁)·(hₛ₊₁ − hₛ)`` on nodes that include 0 and 1; each interval's
  error against ``F(γ(αₛ₊₁)) − F(γ(αₛ))`` is exact, and the worst intervals are
  split (bisected, or cut at 1/8 when they touch an end of the path).

Each example gets its own nodes (the path points are per example anyway), so
a result never depends on the other examples of the batch; all examples'
new nodes of a round are evaluated as one folded batch. Iteration stops for an
example when ``|Σ quadrature − (Φ(x) − Φ(b))| ≤ tolerance·|Φ(x) − Φ(b)|`` (plus a
float-rounding floor), or when one more refinement would pass ``max_steps``
evaluations; then :class:`IntegrationBudgetWarning` is issued. After each
round, ``report(settled, evaluations=...)`` hears how many examples settled in
it (converged, or out of budget) and how many evaluations were made so far (a
progress bar over the examples, for ``show_progress=True``).

References:
    Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017;
    Piessens et al., "QUADPACK" (adaptive subdivision), 1983;
    Patterson, "The optimum addition of points to quadrature formulae", 1968.
"""

from __future__ import annotations

import math  # noqa: F401  (used by the doctest)
import warnings
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ._errors import bad_type, bad_value, check_count
from .inputs import take_examples
from .paths import Path, straight_line
from .quadrature import PATTERSON_LEVELS, gauss_kronrod_patterson, gausslegendre, interpolant_integrals, interpolatory_rule
from .selectors import Target

DEFAULT_TOLERANCE = 1e-3
DEFAULT_MAX_STEPS = 256
FIRST_PASS = 8      # Gauss–Legendre nodes of the first pass on [0, 1] (level 0 of gauss_kronrod_patterson)
PER_SPLIT = 2       # Gauss–Legendre nodes added to a split-off gap
CONCENTRATED = 0.8  # a panel whose error sits this much in one gap between its nodes holds a local feature
SMOOTH_DROP = 0.15  # a level that cuts the drift at least this much shows a smooth integrand
MISSED = 0.5        # a first rule whose drift is this much of its panel's change missed a feature: split
UNRESOLVED = 0.04   # a level whose drift is still this much of its panel's change has not resolved it: climb on
STABLE = 1.5        # a panel rule with Σ|weights| above this multiple of its width amplifies noise: cut the panel


class IntegrationBudgetWarning(UserWarning):
    """``n_steps="auto"`` ran out of ``max_steps`` before meeting ``tolerance`` for some examples."""


class Convergence(NamedTuple):
    """What an ``n_steps="auto"`` integration achieved, per example.

    ``delta``: ``Σ attributions − (Φ(x) − Φ(b))`` (``[N]``, or ``[K, N]`` for a list
    of selectors); ``evaluations``: integrand (gradient) evaluations used ``[N]``;
    ``converged``: whether ``tolerance`` was met within ``max_steps`` ``[N]``.
    """

    delta: Tensor
    evaluations: Tensor
    converged: Tensor


def is_auto(n_steps: object) -> bool:
    """Whether ``n_steps`` asks for adaptive integration.

    Example:
        >>> is_auto("auto"), is_auto(50), is_auto("AUTO")
        (True, False, False)
    """
    return isinstance(n_steps, str) and n_steps == "auto"


def check_auto(tolerance: object, max_steps: object, least: int = FIRST_PASS) -> tuple[float, int]:
    """Validate ``tolerance`` (a float in (0, 1)) and ``max_steps`` (an int ≥ the first pass).

    Example:
        >>> check_auto(1e-3, 256), check_auto(0.5, 8)
        ((0.001, 256), (0.5, 8))
        >>> check_auto(1e-3, 4)
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxValueError: `max_steps` must be an int of at least 8 (the first pass); got 4.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise bad_type("tolerance", "a float in (0, 1) (relative completeness gap)", tolerance)
    if not 0 < tolerance < 1:
        raise bad_value("tolerance", "a float in (0, 1) (relative completeness gap)", tolerance)
    return float(tolerance), check_count("max_steps", max_steps, least, f"an int of at least {least} (the first pass)")


def rows_on_path(xs: Sequence[Tensor], bs: Sequence[Tensor], examples: Tensor, alphas: Tensor,
                 path: Path = straight_line) -> tuple[Tensor, ...]:
    """Path points for rows ``(example, α)``: ``γ(α_r)`` between ``bs[e_r]`` and ``xs[e_r]``, ``[R, ...]``.

    Each row has its own node (``path`` is evaluated one row at a time, under ``vmap``).

    Example:
        >>> rows_on_path((torch.tensor([[2.0], [4.0]]),), (torch.zeros(()),), torch.tensor([1, 0]),
        ...              torch.tensor([0.5, 0.25]))[0].tolist()
        [[2.0], [0.5]]
    """
    xe = tuple(x[examples] for x in xs)
    be = tuple(torch.broadcast_to(b, x.shape)[examples] for x, b in zip(xs, bs))

    def one(x_r, b_r, a_r):
        return tuple(p[0, 0] for p in path(tuple(v[None] for v in x_r), tuple(v[None] for v in b_r), a_r[None]))

    return torch.func.vmap(one)(xe, be, alphas.to(xs[0].dtype))


def rows_of(args: tuple, target: Target | None, n_examples: int, examples: Tensor) -> tuple[tuple, Target | None]:
    """The extra forward arguments and the target for rows drawn from the examples ``examples``.

    Example:
        >>> target = Target(None, torch.tensor([[0], [1], [2]]))   # one index row per example
        >>> args, rows = rows_of((torch.tensor([10.0, 20.0, 30.0]), "mode"), target, 3, torch.tensor([2, 2, 0]))
        >>> args[0].tolist(), args[1], rows.per_example.tolist()
        ([30.0, 30.0, 10.0], 'mode', [[2], [2], [0]])
    """
    if target is not None and target.per_example is not None:
        target = Target(None, target.per_example[examples.to(target.per_example.device)])
    return take_examples(args, n_examples, examples), target


def warn_unconverged(method: str, convergence: Convergence, change: Tensor, tolerance: float, max_steps: int) -> None:
    """Issue :class:`IntegrationBudgetWarning` when some example missed ``tolerance`` within ``max_steps``.

    Example:
        >>> conv = Convergence(torch.tensor([0.5, 0.0]), torch.tensor([256, 16]), torch.tensor([False, True]))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always"); warn_unconverged("ig", conv, torch.tensor([2.0, 1.0]), 1e-3, 256)
        >>> caught[0].category.__name__, "1 of 2 examples" in str(caught[0].message)
        ('IntegrationBudgetWarning', True)
    """
    missed = ~convergence.converged
    if bool(missed.any()):
        rel = (convergence.delta.abs() / change.abs().clamp_min(torch.finfo(change.dtype).tiny)).reshape(-1, missed.numel())
        worst = float(rel.max(0).values[missed].max())
        warnings.warn(f"{method}: n_steps='auto' spent max_steps={max_steps} integrand evaluations on "
                      f"{int(missed.sum())} of {missed.numel()} examples without meeting tolerance={tolerance:g} "
                      f"(largest relative completeness gap {worst:.3g}); raise max_steps, or loosen tolerance.",
                      IntegrationBudgetWarning, stacklevel=4)


def _quiet(settled: int, **postfix: object) -> None:
    """The default ``report`` of the adaptive integrators: nothing."""


def _floor(ends: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The gap float rounding alone can leave: ``64·eps·(|Φ(b)| + |Φ(x)|)``."""
    return 64 * torch.finfo(dtype).eps * (np.abs(ends[0]) + np.abs(ends[1]))


class _Ladder(NamedTuple):
    """A panel still climbing the nested levels of :func:`~attrfx.quadrature.gauss_kronrod_patterson` grown from
    ``first`` Gauss–Legendre nodes: its ``level`` and the relative drift that level left."""

    first: int
    level: int
    drift: float


class _Example:
    """One example's state: evaluated nodes (α, ``φ`` ``[K]``, ``Φ`` ``[K]``, row id), its panel breaks, and the
    panels that still climb nested levels (keyed by their ends)."""

    def __init__(self) -> None:
        self.alpha: list[float] = []
        self.rate: list[np.ndarray] = []
        self.value: list[np.ndarray] = []
        self.row: list[int] = []
        self.breaks = [0.0, 1.0]
        self.ladders = {(0.0, 1.0): _Ladder(FIRST_PASS, 0, math.inf)}

    def add(self, alpha: float, rate: np.ndarray, value: np.ndarray, row: int) -> None:
        self.alpha.append(alpha)
        self.rate.append(rate)
        self.value.append(value)
        self.row.append(row)


def adaptive_integrate(evaluate: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Sequence[Tensor]]],
                       ends: tuple[Tensor, Tensor], *, tolerance: float = DEFAULT_TOLERANCE,
                       max_steps: int = DEFAULT_MAX_STEPS, chunk: int | None = None,
                       report: Callable[..., None] = _quiet) -> tuple[tuple[Tensor, ...], Convergence]:
    """``∫₀¹ g(γ(α)) dα`` per example on adaptive panels, until completeness holds.

    ``evaluate(examples, alphas)`` takes rows (example index ``[R]``, node ``[R]``)
    and returns ``(φ, Φ, vectors)``: the completeness integrand ``[K, R]``, the
    explained values ``Φ(γ(α))`` ``[K, R]``, and tensors ``[K, R, ...]`` to integrate
    with the same nodes. ``ends`` are ``Φ`` at α = 0 and 1, ``[K, N]`` each.
    Returns the integrals ``[K, N, ...]`` and a :class:`Convergence` whose
    ``delta`` is ``Σ weights·φ − (Φ(1) − Φ(0))``. ``report(settled, evaluations=...)``
    is called after each round.

    Example:
        >>> f = lambda a: torch.exp(-((a - 1e-3) / 1e-4) ** 2 / 2)          # a spike near 0
        >>> F = lambda a: 1e-4 * math.sqrt(math.pi / 2) * torch.erf((a - 1e-3) / (1e-4 * math.sqrt(2)))
        >>> def ev(ex, al):
        ...     return f(al)[None], F(al)[None], (f(al)[None, :, None],)
        >>> zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
        >>> (total,), conv = adaptive_integrate(ev, (F(zero).reshape(1, 1), F(one).reshape(1, 1)), tolerance=1e-6)
        >>> bool(abs(total.item() / (F(one) - F(zero)).item() - 1) < 1e-6), bool(conv.converged.all())
        (True, True)
    """
    n_examples = ends[0].shape[1]
    e0, e1 = ends[0].double().cpu().numpy(), ends[1].double().cpu().numpy()     # [K, N]
    change, floor = e1 - e0, _floor((e0, e1), ends[0].dtype)
    state = [_Example() for _ in range(n_examples)]
    weights: list[dict[int, float]] = [{} for _ in range(n_examples)]
    gaps, converged = np.zeros(change.shape), np.zeros(n_examples, dtype=bool)
    pending = {e: gauss_kronrod_patterson(0, FIRST_PASS).alphas.tolist() for e in range(n_examples)}
    stored: list[Sequence[Tensor]] = []     # the vectors of every evaluated chunk, rows in order
    n_rows = 0
    while pending:
        rows_e = [e for e, al in pending.items() for _ in al]
        rows_a = [a for al in pending.values() for a in al]
        i = 0
        for rates, values, vectors in _evaluate_rows(evaluate, rows_e, rows_a, chunk, ends[0].device):
            r, v = rates.double().cpu().numpy(), values.double().cpu().numpy()
            for j in range(r.shape[1]):
                state[rows_e[i]].add(rows_a[i], r[:, j], v[:, j], n_rows)
                i, n_rows = i + 1, n_rows + 1
            stored.append(tuple(vectors))
        pending = {}
        for e in dict.fromkeys(rows_e):
            weights[e], gaps[:, e], plan = _refine_panels(state[e], e0[:, e], e1[:, e], floor[:, e], tolerance,
                                                          max_steps)
            converged[e] = plan is None
            if plan:
                pending[e] = plan
        report(len(dict.fromkeys(rows_e)) - len(pending), evaluations=n_rows)
    return _weighted_sums(stored, weights, n_examples), _convergence(gaps, state, converged, ends[0])


def adaptive_path(at_rows: Callable[[Tensor, tuple[Tensor, ...]], tuple[Sequence[Tensor], Tensor, Sequence[Tensor]]],
                  xs: Sequence[Tensor], bs: Sequence[Tensor], ends: tuple[Tensor, Tensor], **options: object
                  ) -> tuple[tuple[Tensor, ...], Convergence]:
    """:func:`adaptive_integrate` along the straight path from ``bs`` to ``xs``, for a value ``Φ`` with gradient.

    ``at_rows(examples, points)`` takes rows (example index ``[R]``, path points ``[R, ...]`` per input)
    and returns ``(∂Φ/∂x, Φ, vectors)``: the gradients ``[K, R, ...]`` per input, whose product with
    ``x − b`` is the completeness integrand, the values ``[K, R]``, and the tensors to integrate. ``Φ``
    is a neuron (``K`` selectors) or an output (``K = 1``); ``ends``: ``Φ`` at ``bs`` and ``xs``, ``[K, N]``.
    ``options``: those of :func:`adaptive_integrate`.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)     # Φ(x) = Σ x³, integrate ∂Φ/∂x
        >>> def at_rows(ex, pts):
        ...     g = (3 * pts[0] ** 2)[None]
        ...     return (g,), (pts[0] ** 3).sum(1)[None], (g,)
        >>> ends = (torch.zeros(1, 1, dtype=torch.float64), (x ** 3).sum(1)[None])
        >>> (total,), conv = adaptive_path(at_rows, (x,), (torch.zeros((), dtype=torch.float64),), ends)
        >>> [round(v, 6) for v in (total[0, 0] * x[0]).tolist()], bool(conv.converged.all())
        ([1.0, 8.0], True)
    """
    diffs = tuple(x - torch.broadcast_to(b, x.shape) for x, b in zip(xs, bs))

    def evaluate(examples: Tensor, alphas: Tensor):
        grads, values, vectors = at_rows(examples, rows_on_path(xs, bs, examples, alphas))
        rate = sum((g * d[examples]).reshape(g.shape[0], g.shape[1], -1).sum(2) for g, d in zip(grads, diffs))
        return rate, values, vectors

    return adaptive_integrate(evaluate, ends, **options)


def _evaluate_rows(evaluate: Callable, examples: list[int], alphas: list[float], chunk: int | None,
                   device: torch.device):
    """Evaluate rows ``(example, α)`` in folded batches of at most ``chunk`` rows."""
    step = chunk or len(examples)
    for start in range(0, len(examples), step):
        ex = torch.tensor(examples[start:start + step], dtype=torch.long, device=device)
        yield evaluate(ex, torch.tensor(alphas[start:start + step], dtype=torch.float64, device=device))


def _convergence(gaps: np.ndarray, state: list[_Example], converged: np.ndarray, like: Tensor) -> Convergence:
    return Convergence(torch.as_tensor(gaps, dtype=like.dtype, device=like.device),
                       torch.tensor([len(ex.alpha) for ex in state], device=like.device),
                       torch.as_tensor(converged, device=like.device))


def _weighted_sums(stored: list, weights: list[dict[int, float]], n_examples: int) -> tuple[Tensor, ...]:
    """``Σ_rows w_row·v[:, row]`` per example: ``[K, N, ...]`` for each stored tensor."""
    vectors = [torch.cat(parts, dim=1) for parts in zip(*stored)]
    w = torch.zeros(vectors[0].shape[1], dtype=torch.float64)
    owner = torch.zeros(vectors[0].shape[1], dtype=torch.long)
    for e, ws in enumerate(weights):
        for row, weight in ws.items():
            w[row], owner[row] = weight, e
    out = []
    for v in vectors:
        scaled = v * w.to(v.dtype).to(v.device).reshape((1, -1) + (1,) * (v.dim() - 2))
        total = torch.zeros((v.shape[0], n_examples) + tuple(v.shape[2:]), dtype=v.dtype, device=v.device)
        out.append(total.index_add_(1, owner.to(v.device), scaled))
    return tuple(out)


def _refine_panels(ex: _Example, e0: np.ndarray, e1: np.ndarray, floor: np.ndarray, tolerance: float,
                   max_steps: int) -> tuple[dict[int, float], np.ndarray, list[float] | None]:
    """One example's weights, gap ``[K]`` and new nodes (``None``: converged; ``[]``: out of budget).

    The panels whose measured error is largest are refined: a panel whose error looks smooth
    moves up a nested level (:func:`_next_level`); otherwise it is split (in ``ex.breaks``)
    around its worst sub-gap, which gets ``PER_SPLIT`` Gauss–Legendre nodes and a ladder of its own.
    """
    order = np.argsort(ex.alpha)
    alpha = np.asarray(ex.alpha)[order]
    rate, value = np.stack(ex.rate)[order], np.stack(ex.value)[order]
    rows = np.asarray(ex.row)[order]
    breaks, budget = ex.breaks, max_steps - len(ex.alpha)
    scale = np.maximum(np.abs(e1 - e0), floor / tolerance + 1e-300)

    def phi_at(point: float) -> np.ndarray:
        return e0 if point == 0.0 else e1 if point == 1.0 else value[np.searchsorted(alpha, point)]

    weights: dict[int, float] = {}
    panels = []
    for lo, hi, inside, w in _panel_rules(ex, alpha):
        for idx, wi in zip(inside, w):
            weights[int(rows[idx])] = weights.get(int(rows[idx]), 0.0) + float(wi)
        error = w @ rate[inside] - (phi_at(hi) - phi_at(lo))
        panels.append((float(np.max(np.abs(error) / scale)), lo, hi, inside, error))
    gap = sum(p[4] for p in panels)
    if np.all(np.abs(gap) <= tolerance * np.abs(e1 - e0) + floor):
        return weights, gap, None
    plan: list[float] = []
    worst = max(p[0] for p in panels)
    for err, lo, hi, inside, error in sorted(panels, key=lambda p: -p[0]):
        if err < 0.25 * worst:
            break
        ladder = ex.ladders.pop((lo, hi), None)
        if ladder is not None:
            ahead = _next_level(ladder, lo, hi, alpha[inside], rate[inside], phi_at, error, scale, budget - len(plan))
            if ahead:
                ex.ladders[(lo, hi)], nodes = ahead
                plan.extend(nodes)
                continue
        if len(plan) + PER_SPLIT > budget:
            break
        gap_lo, gap_hi = _worst_gap(lo, hi, alpha[inside], rate[inside], value[inside], phi_at, scale)
        if gap_hi - gap_lo <= 1e-12 * max(gap_hi, 1e-300):
            continue
        breaks.extend(b for b in (gap_lo, gap_hi) if b not in breaks)
        ex.ladders[(gap_lo, gap_hi)] = _Ladder(PER_SPLIT, 0, math.inf)
        plan.extend((gap_lo + (gap_hi - gap_lo) * gauss_kronrod_patterson(0, PER_SPLIT).alphas).tolist())
    breaks.sort()
    return weights, gap, plan


def _panel_rules(ex: _Example, alpha: np.ndarray) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """Each panel's ends, node indices into the sorted ``alpha`` and interpolatory weights.

    A panel whose rule has ``Σ|w| > STABLE·(hi − lo)`` (an ill-placed node set: noise in ``φ``
    would be amplified) is first cut at its middle node, in ``ex.breaks``, until every rule is stable.
    """
    rules, todo = [], list(zip(ex.breaks[:-1], ex.breaks[1:]))
    while todo:
        lo, hi = todo.pop(0)
        inside = np.nonzero((alpha >= lo) & (alpha <= hi))[0]
        w = interpolatory_rule(torch.from_numpy(alpha[inside]), lo, hi).weights.numpy()
        interior = inside[(alpha[inside] > lo) & (alpha[inside] < hi)]
        if np.abs(w).sum() > STABLE * (hi - lo) and len(interior):
            cut = float(alpha[interior[len(interior) // 2]])
            ex.breaks.append(cut)
            ex.ladders.pop((lo, hi), None)
            todo[:0] = [(lo, cut), (cut, hi)]
            continue
        rules.append((lo, hi, inside, w))
    ex.breaks.sort()
    return rules


def _next_level(ladder: _Ladder, lo: float, hi: float, alpha: np.ndarray, rate: np.ndarray, phi_at: Callable,
                error: np.ndarray, scale: np.ndarray, budget: int) -> tuple[_Ladder, list[float]] | None:
    """The ladder and new nodes that lift the panel ``[lo, hi]`` to its next nested level, or ``None`` to split it.

    With ``p`` the interpolant of ``φ`` on the panel's nodes ``alpha``, the drift
    ``max_α |∫ₗₒ^α p − (Φ(α) − Φ(lo))|`` over the nodes, as a fraction of the panel's change
    ``|Φ(hi) − Φ(lo)|``, says how much the level missed. The level goes up unless a narrow
    feature shows: one gap between known points holds more than ``CONCENTRATED`` of the error;
    or the first rule missed ``MISSED`` or more; or a later level, though it resolved the panel
    (missed less than ``UNRESOLVED``), cut the drift less than ``1/SMOOTH_DROP``-fold.
    """
    worst = int(np.argmax(np.abs(error) / scale))
    cuts = np.unique(np.concatenate([[lo], alpha, [hi]]))
    known = np.stack([phi_at(c)[worst] for c in cuts])
    local = (interpolant_integrals(alpha, cuts, lo, hi) @ rate[:, worst] - np.diff(known)) / scale[worst]
    drift, level = float(np.abs(np.cumsum(local)).max()), ladder.level
    missed = drift * scale[worst] / max(abs(known[-1] - known[0]), 1e-300)
    if level + 1 >= PATTERSON_LEVELS or np.abs(local).max() > CONCENTRATED * np.abs(local).sum() \
            or (level == 0 and missed >= MISSED) \
            or (level > 0 and missed < UNRESOLVED and drift > SMOOTH_DROP * ladder.drift):
        return None
    new = lo + (hi - lo) * gauss_kronrod_patterson(level + 1, ladder.first).alphas.numpy()
    new = new[~np.isin(new, alpha)]
    if len(new) > budget:
        return None
    return _Ladder(ladder.first, level + 1, drift), new.tolist()


def _worst_gap(lo: float, hi: float, alpha: np.ndarray, rate: np.ndarray, value: np.ndarray,
               phi_at: Callable, scale: np.ndarray) -> tuple[float, float]:
    """The gap between consecutive known points of a panel whose exact ``ΔΦ`` the trapezoid misses most."""
    points = [lo] + [a for a in alpha.tolist() if lo < a < hi] + [hi]
    known = {float(a): r for a, r in zip(alpha.tolist(), rate)}
    best, where = -1.0, (lo, hi)
    for a, c in zip(points[:-1], points[1:]):
        ra, rc = known.get(a), known.get(c)
        slope = (ra + rc) / 2 if ra is not None and rc is not None else ra if ra is not None else rc
        miss = float(np.max(np.abs(slope * (c - a) - (phi_at(c) - phi_at(a))) / scale))
        if miss > best:
            best, where = miss, (a, c)
    return where


def adaptive_differences(evaluate: Callable[[Tensor, Tensor], tuple[Tensor, Sequence[Tensor], Sequence[Tensor]]],
                         n_examples: int, *, tolerance: float = DEFAULT_TOLERANCE, max_steps: int = DEFAULT_MAX_STEPS,
                         chunk: int | None = None, device: torch.device | None = None,
                         report: Callable[..., None] = _quiet) -> tuple[tuple[Tensor, ...], Convergence]:
    """``∫ g dh`` per example as ``Σₛ ½(gₛ + gₛ₊₁)·(hₛ₊₁ − hₛ)`` on adaptive nodes including 0 and 1.

    ``evaluate(examples, alphas)`` returns ``(F, hs, gs)`` for the rows: ``F(γ(α))``
    ``[R]``, and the activations ``h`` and gradients ``g = ∂F/∂h``, tensors ``[R, ...]``.
    Each interval's error ``Σ ½(gₛ + gₛ₊₁)·(hₛ₊₁ − hₛ) − (Fₛ₊₁ − Fₛ)`` is exact; the
    worst intervals are split until ``|Σ attributions − (F(1) − F(0))|`` meets
    ``tolerance``. Returns the sums ``[N, ...]`` and a :class:`Convergence`;
    ``report(settled, evaluations=...)`` is called after each round.

    Example:
        >>> def ev(ex, al):                      # h = α², F = h³ (∂F/∂h = 3h²): ∫ 3h² dh = 1
        ...     h = al[:, None] ** 2
        ...     return h[:, 0] ** 3, (h,), (3 * h ** 2,)
        >>> (attr,), conv = adaptive_differences(ev, 1, tolerance=1e-4)
        >>> bool(abs(attr.item() - 1) <= 1e-4), bool(conv.converged.all())
        (True, True)
    """
    first = torch.linspace(0, 1, FIRST_PASS, dtype=torch.float64).tolist()
    state = [{"alpha": [], "F": [], "h": [], "g": []} for _ in range(n_examples)]
    pending = {e: first for e in range(n_examples)}
    totals: list = [None] * n_examples
    gaps, converged = np.zeros(n_examples), np.zeros(n_examples, dtype=bool)
    dtype, evaluations = None, 0
    while pending:
        rows_e = [e for e, al in pending.items() for _ in al]
        rows_a = [a for al in pending.values() for a in al]
        i = 0
        for F, hs, gs in _evaluate_rows(evaluate, rows_e, rows_a, chunk, device):
            dtype = F.dtype
            for j in range(F.shape[0]):
                s = state[rows_e[i]]
                s["alpha"].append(rows_a[i])
                s["F"].append(float(F[j]))
                s["h"].append([h[j] for h in hs])
                s["g"].append([g[j] for g in gs])
                i += 1
        pending = {}
        for e in dict.fromkeys(rows_e):
            totals[e], gaps[e], plan = _refine_intervals(state[e], tolerance, max_steps, dtype)
            converged[e] = plan is None
            if plan:
                pending[e] = plan
        evaluations += len(rows_e)
        report(len(dict.fromkeys(rows_e)) - len(pending), evaluations=evaluations)
    attrs = tuple(torch.stack([t[i] for t in totals]) for i in range(len(totals[0])))
    like = attrs[0]
    return attrs, Convergence(torch.as_tensor(gaps, dtype=like.dtype, device=like.device),
                              torch.tensor([len(s["alpha"]) for s in state], device=like.device),
                              torch.as_tensor(converged, device=like.device))


def _refine_intervals(s: dict, tolerance: float, max_steps: int,
                      dtype: torch.dtype) -> tuple[list[Tensor], float, list[float] | None]:
    """One example's trapezoid–Stieltjes sums, gap and new nodes (``None``: converged; ``[]``: out of budget)."""
    order = np.argsort(s["alpha"])
    alpha, F = np.asarray(s["alpha"])[order], np.asarray(s["F"])[order]
    hs = [torch.stack([s["h"][i][k] for i in order]) for k in range(len(s["h"][0]))]
    gs = [torch.stack([s["g"][i][k] for i in order]) for k in range(len(s["g"][0]))]
    pieces = [(g[1:] + g[:-1]) / 2 * (h[1:] - h[:-1]) for h, g in zip(hs, gs)]
    local = sum(p.reshape(p.shape[0], -1).sum(1) for p in pieces).double().cpu().numpy() - np.diff(F)
    gap, change = float(local.sum()), F[-1] - F[0]
    totals = [p.sum(0) for p in pieces]
    if abs(gap) <= tolerance * abs(change) + _floor(np.array([F[0], F[-1]]), dtype):
        return totals, gap, None
    budget = max_steps - len(alpha)
    worst = np.abs(local).max()
    plan: list[float] = []
    for i in np.argsort(-np.abs(local)):
        if abs(local[i]) < 0.25 * worst or len(plan) >= min(budget, 8):
            break
        a, c = alpha[i], alpha[i + 1]
        if c - a <= 1e-12:
            continue
        cut = a + (c - a) / 8 if a == 0.0 else c - (c - a) / 8 if c == 1.0 else (a + c) / 2
        plan.append(float(cut))
    return totals, gap, plan

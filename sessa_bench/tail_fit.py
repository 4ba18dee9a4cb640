"""Which law a memory tail follows: least-squares fits of log influence against the lag.

    power law:    log I = a - p log L      (I ~ L^-p;  attention dilution and Sessa's feedback)
    exponential:  log I = a - L / tau      (I ~ exp(-L / tau);  a selective SSM's decay)

Both fits predict the same quantity (log I) from the same points, so their R^2 values compare directly:
the law with the higher R^2 fits better. Only lags >= min_lag (and <= max_lag, when given) with a positive
influence enter the fits.
"""

from __future__ import annotations

import math

MIN_POINTS = 3


def _line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Slope, intercept and R^2 of the least-squares line y = intercept + slope * x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    intercept = my - slope * mx
    resid = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - resid / syy if syy > 0 else 1.0  # a flat curve is fitted exactly by slope 0
    return slope, intercept, r2


def fit_tail(lags, influence, min_lag: int = 1, max_lag: int | None = None) -> dict:
    """Fit both laws to influence[i] at lags[i]. Returns the power-law exponent p (positive = decaying),
    the exponential time constant tau (None when the curve does not decay: slope >= 0), the per-lag
    decay factor exp(-1/tau), each fit's intercept and R^2, and `better`: the law with the higher R^2.
    `better` is None and the fits are absent when fewer than 3 usable points remain."""
    if min_lag < 1:
        raise ValueError(f"min_lag must be >= 1 (lags live on a log axis), got {min_lag}")
    pts = [(int(L), float(v)) for L, v in zip(lags, influence)
           if v is not None and L >= min_lag and (max_lag is None or L <= max_lag)
           and math.isfinite(v) and v > 0]
    out = {"min_lag": min_lag, "max_lag": max_lag, "n_points": len(pts),
           "lags": [L for L, _ in pts], "power": None, "exponential": None, "better": None}
    if len(pts) < MIN_POINTS or len({L for L, _ in pts}) < MIN_POINTS:
        return out
    ls = [float(L) for L, _ in pts]
    ys = [math.log(v) for _, v in pts]
    s_pow, a_pow, r2_pow = _line([math.log(L) for L in ls], ys)
    s_exp, a_exp, r2_exp = _line(ls, ys)
    out["power"] = {"exponent": -s_pow, "intercept": a_pow, "r2": r2_pow}
    out["exponential"] = {"slope": s_exp, "tau": (-1.0 / s_exp) if s_exp < 0 else None,
                          "decay_per_lag": math.exp(s_exp), "intercept": a_exp, "r2": r2_exp}
    out["better"] = "power" if r2_pow >= r2_exp else "exponential"
    return out

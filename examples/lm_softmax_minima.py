"""The minima of the LM-Softmax objective on the circle (D = 2), computed directly.

With learned prototypes in a 2-D embedding LM-Softmax ends with an uneven arrangement (class
margin 16° on digits at s = 5, merged directions at s ≥ 10; ``docs/lm_softmax_study.md``).
This script asks what the objective itself prefers, without a network or data: C classes,
one unit feature per class and C unit prototypes on the circle, all free, and the mean
LM-Softmax loss (Zhou et al., ICLR 2022, Eq. of the largest margin softmax)

    f = (1/C) Σ_k [ log Σ_{j≠k} e^{s·cos(ψ_k − φ_j)} − s·cos(ψ_k − φ_k) ],

φ_j the prototype angles, ψ_k the feature angles. One feature per class loses nothing: the
loss is a sum over samples, so at a minimum every sample of class k sits at the best point
for class k (the "unconstrained features" view of a network that can place its features
anywhere). It minimises f from many random starts (Adam on the angles, analytic gradient,
NumPy, vectorised over the starts), and prints for each scale s:

* the best loss found among the runs whose prototypes merge (class margin < 1°), and among
  the runs that end evenly spaced (all gaps within 0.5° of 360°/C);
* the loss of evenly spaced prototypes with each feature on its own prototype (closed form),
  and the smallest curvature of f there (an eigenvalue of the finite-difference Hessian,
  the rotation of everything together left out): negative means even spacing is a saddle,
  from which the objective descends;
* the best configuration: prototype angles, merged groups, gaps, features.

It also finds the scale at which even spacing stops being a minimum (bisection on that
curvature). Runs in well under a minute on one core with the defaults:

    python examples/lm_softmax_minima.py                  # s = 3, 5, 10, 30
    python examples/lm_softmax_minima.py --scales 5 --starts 1000
"""

import argparse

import numpy as np

#: A run whose smallest angle between two prototypes is below this merged two classes.
MERGED_DEG = 1.0
#: A run whose gaps are all within this of 360°/C ended evenly spaced.
EVEN_TOL_DEG = 0.5


def objective(phi, psi, scale, loss="lm_softmax"):
    """Mean LM-Softmax loss and its gradient, for R configurations at once.

    Args:
        phi: (R, C) prototype angles (radians).
        psi: (R, C) feature angles, ψ_k the feature of class k.
        scale: s.
        loss: "lm_softmax", or "normface" for the normalised softmax cross-entropy
            softplus(L_k) (the control: the same computation for a loss that saturates).

    Returns:
        (loss (R,), d loss / d phi (R, C), d loss / d psi (R, C)).
    """
    phi = np.asarray(phi, "float64")
    psi = np.asarray(psi, "float64")
    classes = phi.shape[1]
    diff = psi[:, :, None] - phi[:, None, :]  # (R, k, j): ψ_k − φ_j
    logits = scale * np.cos(diff)
    own = np.eye(classes, dtype=bool)
    negatives = np.where(own, -np.inf, logits)
    top = negatives.max(axis=2, keepdims=True)
    weights = np.exp(negatives - top)
    total = weights.sum(axis=2, keepdims=True)
    lse = (top + np.log(total))[..., 0]
    per_class = lse - np.diagonal(logits, axis1=1, axis2=2)
    q = weights / total  # weights on the negatives, summing to one per class
    # d L_k / d(ψ_k − φ_j) = −s·q_kj·sin(ψ_k − φ_j) for j ≠ k and +s·sin(ψ_k − φ_k) for j = k
    sin = np.sin(diff)
    dd = np.where(own, scale * sin, -scale * q * sin) / classes
    if loss == "normface":  # softplus(L_k): its gradient is σ(L_k) · ∇L_k
        dd = dd * (1.0 / (1.0 + np.exp(-per_class)))[..., None]
        per_class = np.logaddexp(0.0, per_class)
    elif loss != "lm_softmax":
        raise ValueError(f"`loss` must be 'lm_softmax' or 'normface'; got {loss!r}.")
    return per_class.mean(axis=1), -dd.sum(axis=1), dd.sum(axis=2)


def per_class_loss(phi, psi, scale):
    """(C,) loss of each class for one configuration (angles (C,))."""
    phi = np.asarray(phi, "float64")
    psi = np.asarray(psi, "float64")
    logits = scale * np.cos(psi[:, None] - phi[None, :])
    out = []
    for k in range(len(phi)):
        others = np.delete(logits[k], k)
        top = others.max()
        out.append(top + np.log(np.exp(others - top).sum()) - logits[k, k])
    return np.array(out)


def minimise(scale, classes=10, starts=200, steps=4000, seed=0, phi=None, psi=None, loss="lm_softmax"):
    """Adam on the angles from ``starts`` random configurations (or from ``phi``, ``psi``).

    Random starts: prototypes uniform on the circle, each feature near its prototype. The
    first half of the steps uses learning rate 0.02, the second half 0.002 (to settle).

    Returns:
        dict with ``phi``, ``psi`` (R, C) (radians, wrapped to [0, 2π)), ``loss`` (R,) and
        ``grad_norm`` (R,) at the end.
    """
    rng = np.random.default_rng(seed)
    if phi is None:
        phi = rng.uniform(0.0, 2 * np.pi, (starts, classes))
        psi = phi + rng.normal(0.0, 0.1, phi.shape)
    phi = np.array(phi, "float64")
    psi = np.array(psi, "float64")
    params = [phi, psi]
    first = [np.zeros_like(phi), np.zeros_like(psi)]
    second = [np.zeros_like(phi), np.zeros_like(psi)]
    beta1, beta2 = 0.9, 0.999
    for phase, rate in enumerate((0.02, 0.002)):
        count = steps // 2 if phase == 0 else steps - steps // 2
        for t in range(1, count + 1):
            _, g_phi, g_psi = objective(phi, psi, scale, loss)
            for i, grad in enumerate((g_phi, g_psi)):
                first[i] = beta1 * first[i] + (1 - beta1) * grad
                second[i] = beta2 * second[i] + (1 - beta2) * grad * grad
                step = (first[i] / (1 - beta1**t)) / (np.sqrt(second[i] / (1 - beta2**t)) + 1e-12)
                params[i] -= rate * step
        first = [np.zeros_like(phi), np.zeros_like(psi)]
        second = [np.zeros_like(phi), np.zeros_like(psi)]
    value, g_phi, g_psi = objective(phi, psi, scale, loss)
    grad_norm = np.sqrt((g_phi**2).sum(axis=1) + (g_psi**2).sum(axis=1))
    return {
        "phi": np.mod(phi, 2 * np.pi),
        "psi": np.mod(psi, 2 * np.pi),
        "loss": value,
        "grad_norm": grad_norm,
    }


def even_value(scale, classes=10):
    """Loss of C evenly spaced prototypes with every feature on its own prototype:
    log Σ_{j=1}^{C−1} e^{s·cos(2πj/C)} − s."""
    angles = 2 * np.pi * np.arange(1, classes) / classes
    return float(np.log(np.sum(np.exp(scale * np.cos(angles)))) - scale)


def even_curvature(scale, classes=10, h=1e-5):
    """Smallest eigenvalue of the Hessian of f at even spacing (features on their prototypes),
    by central differences of the analytic gradient, with the rotation of all angles together
    (a zero mode: f is rotation invariant) projected out."""
    even = 2 * np.pi * np.arange(classes) / classes
    x0 = np.concatenate([even, even])
    n = 2 * classes
    hessian = np.zeros((n, n))
    for i in range(n):
        plus, minus = x0.copy(), x0.copy()
        plus[i] += h
        minus[i] -= h
        _, gp1, gq1 = objective(plus[None, :classes], plus[None, classes:], scale)
        _, gp0, gq0 = objective(minus[None, :classes], minus[None, classes:], scale)
        hessian[:, i] = (np.concatenate([gp1[0], gq1[0]]) - np.concatenate([gp0[0], gq0[0]])) / (2 * h)
    hessian = (hessian + hessian.T) / 2
    rotation = np.ones(n) / np.sqrt(n)
    keep = np.eye(n) - np.outer(rotation, rotation)
    values = np.linalg.eigvalsh(keep @ hessian @ keep)
    # the projection adds a zero eigenvalue for the rotation: drop the one closest to zero
    values = np.delete(values, np.argmin(np.abs(values)))
    return float(values.min())


def critical_scale(classes=10, low=1.0, high=10.0, iterations=30):
    """The scale at which even spacing turns from a minimum into a saddle (bisection)."""
    if even_curvature(low, classes) < 0 or even_curvature(high, classes) >= 0:
        return float("nan")
    for _ in range(iterations):
        mid = (low + high) / 2
        if even_curvature(mid, classes) < 0:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def gaps_deg(phi):
    """Gaps between consecutive prototypes around the circle (degrees), in circle order."""
    ordered = np.sort(np.mod(phi, 2 * np.pi))
    return np.degrees(np.diff(ordered, append=ordered[0] + 2 * np.pi))


def nearest_deg(phi):
    """(C,) angle from each prototype to its nearest other prototype (degrees)."""
    diff = np.abs(np.mod(phi[:, None] - phi[None, :] + np.pi, 2 * np.pi) - np.pi)
    np.fill_diagonal(diff, np.inf)
    return np.degrees(diff.min(axis=1))


def classify(phi):
    """'merged' (two prototypes within MERGED_DEG), 'even' (every gap within EVEN_TOL_DEG of
    360°/C) or 'other'."""
    gaps = gaps_deg(phi)
    if nearest_deg(phi).min() < MERGED_DEG:
        return "merged"
    if np.all(np.abs(gaps - 360.0 / len(phi)) < EVEN_TOL_DEG):
        return "even"
    return "other"


def hard_max_value(phi):
    """−(2/C) Σ_k sin(g_k⁻/2)·sin(g_k⁺/2), g_k^± the gaps on either side of prototype k: the
    limit of f / s as s → ∞ for these prototypes with the best features (each feature moves
    off its prototype until its two neighbours are equally near)."""
    gaps = np.radians(gaps_deg(phi))  # gaps[i]: from the i-th prototype in circle order to the next
    before = np.roll(gaps, 1)
    values = np.sin(before / 2) * np.sin(gaps / 2)
    return float(-2.0 * values.sum() / len(gaps))


def study(scale, classes=10, starts=200, steps=4000, seed=0, control=True):
    """Minimise from random starts and from a perturbed even spacing; summarise. With
    ``control``, NormFace (softplus of the same per-class loss) from a quarter of the starts."""
    runs = minimise(scale, classes, starts, steps, seed)
    kinds = np.array([classify(p) for p in runs["phi"]])
    normface = None
    if control:
        other = minimise(scale, classes, max(starts // 4, 1), steps, seed, loss="normface")
        other_kinds = [classify(p) for p in other["phi"]]
        normface = {
            "counts": {k: other_kinds.count(k) for k in ("merged", "even", "other")},
            "best": float(other["loss"].min()),
            "even": float(np.logaddexp(0.0, even_value(scale, classes))),
        }
    even = 2 * np.pi * np.arange(classes) / classes
    rng = np.random.default_rng(seed + 1)
    near_even = minimise(
        scale, classes, steps=steps,
        phi=even + rng.normal(0.0, 1e-3, (8, classes)), psi=even + rng.normal(0.0, 1e-3, (8, classes)),
    )

    def best(mask):
        return float(runs["loss"][mask].min()) if mask.any() else float("nan")

    i = int(np.argmin(runs["loss"]))
    return {
        "scale": scale,
        "runs": runs,
        "kinds": kinds,
        "best_merged": best(kinds == "merged"),
        "best_even_run": best(kinds == "even"),
        "best_other": best(kinds == "other"),
        "even": even_value(scale, classes),
        "even_curvature": even_curvature(scale, classes),
        "from_even": float(near_even["loss"].min()),
        "best_index": i,
        "best_loss": float(runs["loss"][i]),
        "best_phi": runs["phi"][i],
        "best_psi": runs["psi"][i],
        "best_grad_norm": float(runs["grad_norm"][i]),
        "normface": normface,
    }


def _fmt(value):
    return "   –   " if np.isnan(value) else f"{value:+.4f}"


def describe(result):
    """Lines describing one scale's result."""
    phi, psi = result["best_phi"], result["best_psi"]
    # angles measured from the prototype after the widest gap, so no group straddles 0°
    ordered = np.sort(phi)
    origin = ordered[(int(np.argmax(gaps_deg(phi))) + 1) % len(phi)]
    rel = np.mod(phi - origin + 1e-12, 2 * np.pi) - 1e-12
    order = np.argsort(rel)
    groups = [[int(order[0])]]
    for a, b in zip(order[:-1], order[1:]):
        if np.degrees(rel[b] - rel[a]) < MERGED_DEG:
            groups[-1].append(int(b))
        else:
            groups.append([int(b)])
    nearest = nearest_deg(phi)
    counts = {k: int(np.sum(result["kinds"] == k)) for k in ("merged", "even", "other")}
    s = result["scale"]
    lines = [
        f"s = {s:g}: {len(result['kinds'])} random starts -> merged {counts['merged']}, "
        f"even {counts['even']}, other {counts['other']}",
        f"  best loss, merged runs      {_fmt(result['best_merged'])}",
        f"  best loss, even runs        {_fmt(result['best_even_run'])}",
        f"  best loss, other runs       {_fmt(result['best_other'])}",
        f"  evenly spaced (closed form) {_fmt(result['even'])}   smallest curvature there "
        f"{result['even_curvature']:+.4f} ({'minimum' if result['even_curvature'] > 0 else 'saddle'})",
        f"  from even spacing + 1e-3 noise, best after descent {_fmt(result['from_even'])}",
        f"  best configuration: loss {result['best_loss']:+.4f} (|grad| {result['best_grad_norm']:.1e}), "
        f"class margin {nearest.min():.1f}°, mean nearest-prototype angle {nearest.mean():.1f}° "
        f"(even: {360 / len(phi):.1f}°); loss / s {result['best_loss'] / s:+.4f}, "
        f"large-s limit of these prototypes {hard_max_value(phi):+.4f} (even: "
        f"{hard_max_value(2 * np.pi * np.arange(len(phi)) / len(phi)):+.4f})",
    ]
    losses = per_class_loss(phi, psi, s)
    for group in groups:
        angle = np.degrees(np.mean(rel[group]))
        offsets = np.degrees(np.mod(psi[group] - phi[group] + np.pi, 2 * np.pi) - np.pi)
        lines.append(
            f"    {angle:6.1f}°  classes {len(group)}  feature offsets "
            + " ".join(f"{o:+5.1f}°" for o in offsets)
            + "  class losses " + " ".join(f"{v:+.3f}" for v in losses[group])
        )
    lines.append("    gaps in circle order: " + " ".join(f"{g:.1f}" for g in gaps_deg(rel)))
    control = result.get("normface")
    if control is not None:
        counts = control["counts"]
        lines.append(
            f"  control, NormFace = softplus(L_k), {sum(counts.values())} starts -> merged "
            f"{counts['merged']}, even {counts['even']}, other {counts['other']}; best "
            f"{control['best']:+.4f}, evenly spaced {control['even']:+.4f}"
        )
    return lines


def library_check(result):
    """The best configuration's loss through km.losses.LMSoftmax (the library), for comparison."""
    import keras_margins as km

    phi, psi = result["best_phi"], result["best_psi"]
    cosines = np.cos(psi[:, None] - phi[None, :]).astype("float32")
    labels = np.arange(len(phi))
    loss = km.losses.LMSoftmax(scale=result["scale"])
    return float(loss(labels, cosines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[3.0, 5.0, 10.0, 30.0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-library", action="store_true", help="skip the km.losses check")
    args = parser.parse_args(argv)
    if args.classes < 4:
        parser.error("--classes must be >= 4 (C ≤ 3 fits a simplex on the circle)")
    print(
        f"LM-Softmax on the circle: C = {args.classes}, D = 2, one free feature per class, "
        f"{args.starts} random starts, {args.steps} Adam steps, seed {args.seed}"
    )
    results = []
    for scale in args.scales:
        result = study(scale, args.classes, args.starts, args.steps, args.seed)
        results.append(result)
        print("\n".join(describe(result)))
        if not args.no_library:
            print(f"  km.losses.LMSoftmax on the best configuration: {library_check(result):+.4f}")
    print(
        f"even spacing is a minimum below s = {critical_scale(args.classes):.3f} and a saddle "
        f"above (C = {args.classes})"
    )
    return results


if __name__ == "__main__":
    main()

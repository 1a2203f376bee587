"""Independent float64 NumPy references shared by the tests (no vatt_gh code)."""

import numpy as np

RW_VA = (2.5, 0.5)


def np_update(g_va, g_vt, method, gamma=None, reweight=RW_VA, phi_hat=0.0):  # noqa: C901
    """The paper's update on flattened float64 vectors, written out literally (one branch per
    method, as the paper states them: over the complexity limit on purpose)."""
    dot = float(g_va @ g_vt)
    n_va, n_vt = np.linalg.norm(g_va), np.linalg.norm(g_vt)
    cos = dot / (n_va * n_vt) if n_va * n_vt > 0 else 0.0

    def realign():  # Algorithm 1: project each on the normal plane of the other, then add
        if dot >= 0:
            return g_va + g_vt
        h_va = g_va - dot / n_vt**2 * g_vt
        h_vt = g_vt - dot / n_va**2 * g_va
        return h_va + h_vt

    if method == "sum":
        return g_va + g_vt
    if method == "reweight":
        return reweight[0] * g_va + reweight[1] * g_vt
    if method == "realign":
        return realign()
    if method == "curriculum":  # Algorithm 2, on the cosine
        return g_va + g_vt if cos > gamma else np.zeros_like(g_va)
    if method == "both":  # Section 4.4
        if cos <= gamma:
            return np.zeros_like(g_va)
        return realign() if cos < 0 else g_va + g_vt
    if method == "gradvac":  # Wang et al. 2021: both modified from the original pair
        if cos >= phi_hat:
            return g_va + g_vt
        k = (phi_hat * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - phi_hat**2)) / np.sqrt(
            1 - phi_hat**2
        )
        new_va = g_va + (g_vt * n_va * k / n_vt if n_vt > 0 else 0.0)
        new_vt = g_vt + (g_va * n_vt * k / n_va if n_va > 0 else 0.0)
        return new_va + new_vt
    raise ValueError(method)


def flat_grads(grads, shapes):
    """Concatenate gradients (None -> zeros of the shape) into one float64 vector."""
    return np.concatenate(
        [
            np.zeros(int(np.prod(s))) if g is None else np.asarray(g, np.float64).ravel()
            for g, s in zip(grads, shapes)
        ]
    )

"""Parameter-level diagnostics of linear-attention learners: what the theory predicts about the
weights themselves, read at every evaluation (``train.diagnostics``) on the first training
task's unseen evaluation episodes.

- ``subspace_alignment`` (Magen & Vardi, Gaussian mixtures with a shared subspace U): the
  learned bilinear form W = P_yy·Q_xx concentrates on span(U): ‖UᵀWU‖_F / ‖W‖_F, and the
  cosines of the principal angles between U and W's top-k left singular vectors.
- ``preconditioner`` (Gatmiry et al., regression with input covariance Σ): the preconditioner A
  read off the weights against Σ⁻¹ (relative Frobenius error after the best scalar), and the
  model's predictions at every loop count l against l steps of GD preconditioned by that A.
- ``gd_step`` (von Oswald et al., one layer on regression): the predictions against one GD step
  from w = 0 with the best step size η, x_qᵀ η (1/i) Σ_j y_j x_j.

Agreement between two prediction vectors is their cosine and ‖a − b‖ / ‖b‖ over every
position with at least one example before it (with none, both predict 0).
"""

from __future__ import annotations

import numpy as np
import torch

from hf_icl.errors import HfIclError
from hf_icl.render.embedding import paired_tokens
from hf_icl.training.config import TrainConfig

PAIRED = ("linear_attention", "looped_linear_attention")


def subspace_alignment(w: np.ndarray, basis: np.ndarray) -> dict:
    """How much of the bilinear form ``w`` (d×d) lies in span(``basis``) (d×k, orthonormal)."""
    norm = np.linalg.norm(w)
    if norm == 0:
        return {"value": 0.0, "principal_cosines": [0.0] * basis.shape[1]}
    top = np.linalg.svd(w)[0][:, : basis.shape[1]]
    cosines = np.clip(np.linalg.svd(basis.T @ top, compute_uv=False), 0.0, 1.0)
    return {
        "value": float(np.linalg.norm(basis.T @ w @ basis) / norm),
        "principal_cosines": [round(float(c), 6) for c in cosines],
    }


def preconditioner_error(a: np.ndarray, cov: np.ndarray) -> dict:
    """min_c ‖c·A − Σ⁻¹‖_F / ‖Σ⁻¹‖_F and the best c (0 and 1 for A = 0)."""
    target = np.linalg.inv(cov)
    scale = float((a * target).sum() / max((a * a).sum(), 1e-300))
    error = np.linalg.norm(scale * a - target) / np.linalg.norm(target)
    return {"value": float(error), "scale": scale}


def agreement(predicted: np.ndarray, reference: np.ndarray) -> dict:
    """Cosine and relative difference of two prediction vectors (1 and 0 when equal)."""
    a, b = predicted.ravel(), reference.ravel()
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
    relative = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
    return {"cosine": cosine, "relative_difference": relative}


def preconditioned_gd_curve(x: np.ndarray, y: np.ndarray, a: np.ndarray, steps: int) -> np.ndarray:
    """(B, n−1): at position i ≥ 1, ``steps`` steps of w ← w − A ∇L(w) from w = 0 on the i
    examples before it, L(w) = (1/2i) Σ (w·x_j − y_j)², evaluated at x_i."""
    from hf_icl.baselines.regression import gradient_descent

    out = []
    for i in range(1, x.shape[1]):
        step_matrix = np.einsum("de,bke->bdk", a, x[:, :i]) / i
        w = gradient_descent(x[:, :i], y[:, :i], step_matrix, steps, 1.0)
        out.append(np.einsum("bd,bd->b", x[:, i], w))
    return np.stack(out, 1)


def model_curve(lsa, x: np.ndarray, y: np.ndarray, loops: int | None = None) -> np.ndarray:
    """(B, n−1) predictions of a linear-attention model at positions ≥ 1, run with ``loops``
    loops (None: as configured)."""
    trained = lsa.config.loops
    lsa.config.loops = loops or trained
    try:
        with torch.no_grad():
            dtype = next(lsa.parameters()).dtype
            tokens = paired_tokens(torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=dtype))
            return lsa.eval()(tokens)[-1, :, 1:].double().numpy()
    finally:
        lsa.config.loops = trained


def _episode_arrays(task, section) -> tuple[list, np.ndarray, np.ndarray]:
    episodes = task.eval_episodes("test", section.eval_episodes, section.eval_length)
    x = np.stack([np.asarray(ep.demo_x, dtype=np.float64) for ep in episodes])
    y = np.stack([np.asarray(ep.demo_y, dtype=np.float64) for ep in episodes])
    return episodes, x, y


def _subspace_row(lsa, task, section) -> dict:
    w = lsa.preconditioner().detach().double().numpy()
    return subspace_alignment(w, np.asarray(task.sampler.subspace))


def _preconditioner_row(lsa, task, section) -> dict:
    episodes, x, y = _episode_arrays(task, section)
    a = lsa.preconditioner().detach().double().numpy()
    row = preconditioner_error(a, np.asarray(episodes[0].meta["input_cov"]))
    counts = sorted({*range(1, lsa.config.loops + 1), *lsa.config.eval_loops})
    row["loops"] = {
        str(n): agreement(model_curve(lsa, x, y, n), preconditioned_gd_curve(x, y, a, n))
        for n in counts
    }
    return row


def _gd_step_row(lsa, task, section) -> dict:
    _, x, y = _episode_arrays(task, section)
    predicted = model_curve(lsa, x, y)
    step = preconditioned_gd_curve(x, y, np.eye(x.shape[2]), 1)
    eta = float((predicted * step).sum() / max((step * step).sum(), 1e-300))
    return {"eta": eta, **agreement(predicted, eta * step)}


READERS = {
    "subspace_alignment": _subspace_row,
    "preconditioner": _preconditioner_row,
    "gd_step": _gd_step_row,
}


def diagnostic_rows(learner, tasks: list, section, step: int) -> list[dict]:
    """One metrics row per requested diagnostic (kind ``diagnostics``); ``value`` is the
    headline figure (alignment, preconditioner error, or the GD-step cosine)."""
    task = next(t for t in tasks if not t.eval_only)
    rows = []
    for name in section.diagnostics:
        row = READERS[name](learner.lm, task, section)
        if "value" not in row:
            row["value"] = row["cosine"]
        rows.append({"kind": "diagnostics", "step": step, "task": task.name, "name": name, **row})
    return rows


def check_diagnostics(config: TrainConfig, tasks: list) -> None:
    """Refuse, before training, diagnostics the model or the first training task cannot give."""
    wanted = config.train.diagnostics
    if not wanted:
        return
    small = config.small_model
    if small is None or small.architecture not in PAIRED:
        raise HfIclError(
            f"train.diagnostics: {wanted} read linear-attention weights; set "
            f"small_model.architecture to {' or '.join(PAIRED)}"
        )
    task = next(t for t in tasks if not t.eval_only)
    sampler = task.sampler
    if "subspace_alignment" in wanted and getattr(sampler, "subspace", None) is None:
        raise HfIclError(
            f"train.diagnostics: subspace_alignment needs a first training task "
            f"with a shared subspace (family gaussian_mixture); task {task.name!r} "
            f"is family {sampler.family!r}"
        )
    for name in ("preconditioner", "gd_step"):
        if name in wanted and getattr(sampler, "input_cov", None) is None:
            raise HfIclError(
                f"train.diagnostics: {name} needs a first training task with an "
                f"input covariance (family regression); task {task.name!r} is "
                f"family {sampler.family!r}"
            )
    if "gd_step" in wanted and small.architecture != "linear_attention":
        raise HfIclError(
            "train.diagnostics: gd_step compares one layer with one GD step; set "
            "small_model.architecture to linear_attention"
        )


def summary(rows: list[dict]) -> list[dict]:
    """The diagnostics rows of the last evaluation, with each one's value over training."""
    diag = [r for r in rows if r["kind"] == "diagnostics"]
    if not diag:
        return []
    last = max(r["step"] for r in diag)
    return [
        {
            **r,
            "history": [[h["step"], round(h["value"], 6)] for h in diag if h["name"] == r["name"]],
        }
        for r in diag
        if r["step"] == last
    ]


def report_lines(items: list[dict]) -> list[str]:
    """Markdown: one line per diagnostic, then the per-loop agreement table if any."""
    if not items:
        return []
    lines = [
        "## Parameter-level diagnostics",
        "",
        "| diagnostic | task | after training | over training (step: value) |",
        "|---|---|---|---|",
    ]
    for item in items:
        history = ", ".join(f"{s}: {v:.3f}" for s, v in item["history"])
        extra = {
            "subspace_alignment": lambda i: (
                "principal cosines " + " ".join(f"{c:.3f}" for c in i["principal_cosines"])
            ),
            "preconditioner": lambda i: f"best scale {i['scale']:.3f}",
            "gd_step": lambda i: (
                f"η = {i['eta']:.4f}, relative difference {i['relative_difference']:.4f}"
            ),
        }[item["name"]](item)
        lines.append(
            f"| {item['name']} | {item['task']} | {item['value']:.4f} ({extra}) | {history} |"
        )
    for item in items:
        if "loops" in item:
            lines += [
                "",
                "Predictions vs preconditioned GD with the read-off preconditioner, "
                "same number of steps as loops:",
                "",
                "| loops | cosine | relative difference |",
                "|---|---|---|",
            ]
            lines += [
                f"| {n} | {v['cosine']:.4f} | {v['relative_difference']:.4f} |"
                for n, v in sorted(item["loops"].items(), key=lambda kv: int(kv[0]))
            ]
    return lines + [""]

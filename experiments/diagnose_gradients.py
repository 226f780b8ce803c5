"""Why did the original CREMA design hold the encoder on the reconstruction plateau?

For two designs (``same``: the original two views of one crop; ``disjoint``: the default, two
non-overlapping 5 s crops) this pretrains the screening recipe on the real corpora with
:func:`crema.train.pretrain.pretrain` and a hook (:class:`GradientDiagnosis`) that, every
``--every`` steps, measures on the step's batch:

* the gradient norm of ``L_rec`` and of ``lambda * L_con`` at each encoder block (two separate
  backward passes), and their cosine similarity over the whole encoder;
* the global gradient norm before clipping (clipping at 1.0 scales both terms alike, so the
  ratio is what it is with or without clipping; the log says how often clipping was active);
* the contrastive top-1 accuracy and ``L_rec``;
* how much of one view's visible input the other view also sees (shared visible samples /
  visible samples).

The hook measures with a forward pass of its own (fresh masks, the run's random streams left as
they were, so the training is that of a run without the hook) and reads the step's gradient for the
clipping count. Writes ``OUT/diagnosis.json`` and ``OUT/gradients.png``; the two pretraining runs
(checkpoint and log) go to ``--runs``. Usage::

    python experiments/diagnose_gradients.py --corpora runs/corpora --out results/design-search/diagnosis --steps 600
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from crema.model.views import crop_starts_for_views
from crema.train.pretrain import StepInfo, pretrain


def block_grad_norms(model, loss) -> tuple[list[float], torch.Tensor]:
    """Per-block gradient norms of ``loss`` over the encoder blocks and the flat encoder gradient."""
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    named = dict(zip([n for n, p in model.encoder.named_parameters() if p.requires_grad], grads))
    norms = []
    for i in range(len(model.encoder.blocks)):
        g = [v for n, v in named.items() if n.startswith(f"blocks.{i}.") and v is not None]
        norms.append(float(torch.sqrt(sum((x.float() ** 2).sum() for x in g))) if g else 0.0)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
    return norms, flat


def shared_visible_fraction(model, x, generator) -> float:
    """Fraction of view 1's visible samples that view 2 also sees (same time, same lead)."""
    obj, w = model.objective, model.model_cfg.window
    b, c, t = x.shape
    g_state = generator.get_state()
    starts = crop_starts_for_views(b, t, min(w, t), 2, obj.view_crop, generator)
    generator.set_state(g_state)
    views = model.make_views(x, generator)
    p = model.model_cfg.patch_size
    vis = ~views.mask.repeat_interleave(p, dim=-1)                                   # (2B, C, W)
    s = torch.zeros(2, b, dtype=torch.long) if starts is None else starts
    shared = []
    for i in range(b):
        a = torch.zeros(c, t, dtype=torch.bool)
        z = torch.zeros(c, t, dtype=torch.bool)
        a[:, s[0, i]:s[0, i] + w] = vis[i]
        z[:, s[1, i]:s[1, i] + w] = vis[b + i]
        shared.append(float((a & z).sum()) / max(1.0, float(a.sum())))
    return float(np.mean(shared))


class GradientDiagnosis:
    """A pretraining hook (:class:`crema.train.pretrain.StepInfo`): counts the steps whose global
    gradient norm exceeds ``grad_clip`` (clipping active), and every ``every`` steps and at
    ``last_step`` logs the per-block gradient norms of ``L_rec`` and ``lambda * L_con``, their
    cosine over the encoder, the losses, the contrastive accuracy and the shared visible input."""

    def __init__(self, every: int, last_step: int, lambda_con: float, grad_clip: float, label: str = ""):
        self.every, self.last_step, self.lambda_con, self.grad_clip, self.label = (
            every, last_step, lambda_con, grad_clip, label)
        self.log: list[dict] = []
        self.steps = self.clipped = 0

    def __call__(self, info: StepInfo) -> None:
        if info.phase != "gradients":
            return
        self.steps += 1
        grads = [p.grad for p in info.model.parameters() if p.grad is not None]
        total = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
        self.clipped += int(self.grad_clip > 0 and total > self.grad_clip)
        if info.step % self.every == 0 or info.step == self.last_step:
            self.log.append(self.measure(info))
            print(self.label, json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                          for k, v in self.log[-1].items() if "norms" not in k}), flush=True)

    def measure(self, info: StepInfo) -> dict:
        model, batch = info.model, info.batch
        x = batch["signal"]
        # fork_rng: this forward draws masks; the run's own streams continue as without the hook
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            out = model(x, lead_mask=batch["lead_mask"], patient_ids=batch["patient"])
            rec_norms, g_rec = block_grad_norms(model, out["loss_rec"])
            con_norms, g_con = block_grad_norms(model, self.lambda_con * out["loss_con"])
            with torch.no_grad():
                share = shared_visible_fraction(model, x[:8].cpu(), torch.Generator().manual_seed(info.step))
        cos = float(torch.nn.functional.cosine_similarity(g_rec, g_con, dim=0))
        values = {key: float(out[key].detach()) for key in ("loss_rec", "loss_con", "acc")}
        return {"step": info.step, "rec_block_norms": rec_norms, "con_block_norms": con_norms,
                "cosine_rec_con": cos, **values, "shared_visible": share}

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / max(1, self.steps)


def run(design: str, args) -> dict:
    from lab import run_config

    cfg = run_config("crema_base" if design == "same" else "crema_disjoint", 0, args.corpora, args.runs / design,
                     "cpu", args.steps)
    diagnosis = GradientDiagnosis(args.every, args.steps - 1, cfg.objective.lambda_con, cfg.train.grad_clip, design)
    pretrain(cfg, progress=False, hooks=[diagnosis])
    return {"design": design, "log": diagnosis.log, "clipped_fraction": diagnosis.clipped_fraction}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for r, colour in zip(results, ("#c0392b", "#2471a3")):
        steps = [e["step"] for e in r["log"]]
        ratio = [np.mean(e["con_block_norms"]) / max(1e-12, np.mean(e["rec_block_norms"])) for e in r["log"]]
        axes[0].plot(steps, ratio, color=colour, label=f"{r['design']}")
        axes[1].plot(steps, [e["loss_rec"] for e in r["log"]], color=colour, label=f"{r['design']} L_rec")
        axes[2].plot(steps, [e["acc"] for e in r["log"]], color=colour, label=f"{r['design']} accuracy")
        axes[2].plot(steps, [e["shared_visible"] for e in r["log"]], color=colour, linestyle=":",
                     label=f"{r['design']} shared visible input")
    axes[0].set_yscale("log")
    axes[0].axhline(1.0, color="black", linewidth=0.8)
    axes[0].set_title("|grad lambda*L_con| / |grad L_rec| (encoder blocks)", fontsize=9)
    axes[1].set_title("reconstruction loss", fontsize=9)
    axes[2].set_title("contrastive top-1 accuracy; shared visible input", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from lab import REPO

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", type=Path, default=REPO / "runs" / "corpora")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "diagnose-gradients",
                   help="where the two pretraining runs write their checkpoints and logs")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=25)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run(d, args) for d in ("same", "disjoint")]
    (args.out / "diagnosis.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "gradients.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why did the original CREMA design hold the encoder on the reconstruction plateau?

For two designs (``same``: the original two views of one crop; ``disjoint``: the default, two
non-overlapping 5 s crops) this trains the screening recipe on the real corpora and, every
``--every`` steps, measures on the same batch:

* the gradient norm of ``L_rec`` and of ``lambda * L_con`` at each encoder block (two separate
  backward passes), and their cosine similarity over the whole encoder;
* the global gradient norm before clipping (clipping at 1.0 scales both terms alike, so the
  ratio is what it is with or without clipping; the log says how often clipping was active);
* the contrastive top-1 accuracy and ``L_rec``;
* how much of one view's visible input the other view also sees (shared visible samples /
  visible samples).

Writes ``OUT/diagnosis.json`` and ``OUT/gradients.png``. Usage::

    python experiments/diagnose_gradients.py --corpora runs/corpora --out results/design-search/diagnosis --steps 600
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lab import REPO, run_config


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
    from crema.model.crema import crop_starts_for_views

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


def run(design: str, args) -> dict:
    from crema.model.crema import CREMA
    from crema.train.rng import seed_everything
    from crema.train.stream import open_pretrain_data
    from crema.train.schedule import lr_at, make_adamw, scaled_lr, set_lr

    cfg = run_config("crema_base" if design == "same" else "crema_disjoint", 0, args.corpora,
                                   args.out / design, "cpu", args.steps)
    t = cfg.train
    data = open_pretrain_data(t.corpora, cfg.model.window, t.seed, cfg.objective.view_crop)
    seed_everything(0)
    model = CREMA(cfg.model, cfg.objective, fs=data.preprocess.fs)
    base_lr = scaled_lr(t.blr, t.batch_size)
    opt = make_adamw(model, base_lr, t.weight_decay, t.betas)
    loader = torch.utils.data.DataLoader(data.dataset.dataset, batch_size=t.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0), drop_last=True)
    gen = torch.Generator().manual_seed(1)
    log, step, clipped = [], 0, 0
    while step < args.steps:
        for batch in loader:
            if step >= args.steps:
                break
            x = batch["signal"].float()
            set_lr(opt, lr_at(step, base_lr, t.min_lr, t.warmup_steps, t.steps))
            out = model(x, generator=gen)
            if step % args.every == 0 or step == args.steps - 1:
                rec_norms, g_rec = block_grad_norms(model, out["loss_rec"])
                con_norms, g_con = block_grad_norms(model, cfg.objective.lambda_con * out["loss_con"])
                cos = float(torch.nn.functional.cosine_similarity(g_rec, g_con, dim=0))
                with torch.no_grad():
                    share = shared_visible_fraction(model, x[:8], torch.Generator().manual_seed(step))
                log.append({"step": step, "rec_block_norms": rec_norms, "con_block_norms": con_norms,
                            "cosine_rec_con": cos, "loss_rec": float(out["loss_rec"]),
                            "loss_con": float(out["loss_con"]), "acc": float(out["acc"]),
                            "shared_visible": share})
                print(design, json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                          for k, v in log[-1].items() if "norms" not in k}), flush=True)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            clipped += int(total > t.grad_clip)
            opt.step()
            step += 1
    return {"design": design, "log": log, "clipped_fraction": clipped / max(1, step)}


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", type=Path, default=REPO / "runs" / "corpora")
    p.add_argument("--out", type=Path, required=True)
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

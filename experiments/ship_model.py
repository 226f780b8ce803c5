"""Copy a finished pretraining run into the package as a shipped model (``src/crema/weights``).

Writes ``src/crema/weights/NAME/{config.json, model.safetensors, MODEL_CARD.md}`` and the entry of
``models.json`` (SHA-256 of the weights, one-line summary). The card is rendered from
``--card-template`` (Markdown with ``{placeholders}`` filled from the run's config and log) and
``--table`` (the measured table, Markdown, made by ``crema report`` of the card suite).

Usage::

    python experiments/ship_model.py runs/pretrain/crema-mini-ecg12 --name crema-mini-ecg12 \\
        --card-template docs/MODEL_CARD.template.md --table results/card/card_table.md
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "crema" / "weights"


def count_params(weights: Path) -> dict[str, int]:
    from safetensors.torch import load_file

    state = load_file(str(weights))
    parts: dict[str, int] = {}
    for key, tensor in state.items():
        part = key.split(".")[0]
        parts[part] = parts.get(part, 0) + tensor.numel()
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--summary", required=True, help="one line for `crema models`")
    p.add_argument("--card-template", type=Path, required=True)
    p.add_argument("--table", type=Path, help="measured table (Markdown) to put in the card")
    args = p.parse_args(argv)

    config = json.loads((args.run / "config.json").read_text())
    log = [json.loads(x) for x in (args.run / "log.jsonl").read_text().splitlines() if x.strip()]
    dst = WEIGHTS / args.name
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / "model.safetensors", dst / "model.safetensors")  # follows checkpoint links
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    digest = hashlib.sha256((dst / "model.safetensors").read_bytes()).hexdigest()
    params = count_params(dst / "model.safetensors")
    fields = {
        "name": args.name, "sha256": digest, "step": config["step"], "steps": config["train"]["steps"],
        "batch_size": config["train"]["batch_size"], "seed": config["train"]["seed"],
        "wall_min": f"{log[-1]['elapsed_s'] / 60:.0f}", "loss_rec": f"{log[-1]['loss_rec']:.3f}",
        "acc": f"{log[-1]['acc']:.2f}", "encoder_params": f"{params.get('encoder', 0):,}",
        "all_params": f"{sum(params.values()):,}", "size_kb": f"{(dst / 'model.safetensors').stat().st_size / 1024:.0f}",
        "table": args.table.read_text() if args.table else "(not yet measured)",
        "model_json": json.dumps(config["model"]), "objective_json": json.dumps(config["objective"]),
    }
    (dst / "MODEL_CARD.md").write_text(args.card_template.read_text().format(**fields))
    registry = json.loads((WEIGHTS / "models.json").read_text()) if (WEIGHTS / "models.json").exists() else {}
    registry[args.name] = {"sha256": digest, "summary": args.summary}
    (WEIGHTS / "models.json").write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    print(f"shipped {args.name}: step {config['step']}, {fields['size_kb']} KB, sha256 {digest[:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

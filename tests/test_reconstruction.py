"""``crema plot-reconstruction`` and ``CremaModel.reconstruct`` show the same reconstruction."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import crema
from crema.cli import main
from crema.paths import sample_root
from crema.model.checkpoint import load_pretrained
from crema.viz import reconstruction
from crema.viz.reconstruction import windows_from_record

RECORD = sample_root() / "records100" / "00000" / "00001_lr.hea"


def _drawn_by_cli(checkpoint: Path, out: Path, seed: int, monkeypatch) -> dict:
    """The arrays ``crema plot-reconstruction RECORD`` hands to the plot."""
    drawn: dict = {}

    def capture(signal, pred, mask, path, **kwargs):
        drawn.update(signal=signal, pred=pred, mask=mask)
        return Path(path)

    monkeypatch.setattr(reconstruction, "plot_reconstruction", capture)
    assert main(["plot-reconstruction", str(checkpoint), str(RECORD), "--out", str(out), "--seed", str(seed)]) == 0
    return drawn


def test_cli_and_api_reconstruct_the_same_window(tiny_pretrain_checkpoint, tmp_path, monkeypatch):
    drawn = _drawn_by_cli(tiny_pretrain_checkpoint, tmp_path / "r.png", 3, monkeypatch)
    pred, mask, windows = crema.load(tiny_pretrain_checkpoint, device="cpu").reconstruct(RECORD, seed=3)
    np.testing.assert_array_equal(drawn["signal"], windows[0])
    np.testing.assert_array_equal(drawn["mask"], mask[0])
    np.testing.assert_array_equal(drawn["pred"], pred[0])
    # both show the middle of a preprocessed window longer than the model's input
    _, cfg = load_pretrained(tiny_pretrain_checkpoint)
    signals, _, _ = windows_from_record(str(RECORD), None, cfg.preprocess)
    width, offset = cfg.model.window, (signals.shape[-1] - cfg.model.window) // 2
    assert signals.shape[-1] > width and windows[0].shape == (12, width)
    np.testing.assert_array_equal(windows[0], signals[0, :, offset:offset + width])
    # the seed matters
    other = _drawn_by_cli(tiny_pretrain_checkpoint, tmp_path / "s.png", 4, monkeypatch)
    assert (other["mask"] != drawn["mask"]).any()

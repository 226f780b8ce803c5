"""``crema plot-reconstruction`` and ``CremaModel.reconstruct`` show the same reconstruction."""
from __future__ import annotations

import numpy as np

import crema
from crema.paths import sample_root
from crema.train.checkpoint import load_pretrained
from crema.viz.reconstruction import first_window_reconstruction, windows_from_record

RECORD = sample_root() / "records100" / "00000" / "00001_lr.hea"


def test_cli_and_api_reconstruct_the_same_window(tiny_pretrain_checkpoint):
    model, cfg = load_pretrained(tiny_pretrain_checkpoint)
    signals, lead_mask, _ = windows_from_record(str(RECORD), None, cfg.preprocess)
    window, pred, mask = first_window_reconstruction(model, signals, lead_mask, seed=3)

    api_pred, api_mask, api_windows = crema.load(tiny_pretrain_checkpoint, device="cpu").reconstruct(RECORD, seed=3)
    np.testing.assert_array_equal(window, api_windows[0])
    np.testing.assert_array_equal(mask, api_mask[0])
    np.testing.assert_array_equal(pred, api_pred[0])
    # both take the middle of a preprocessed window longer than the model's input
    width, offset = cfg.model.window, (signals.shape[-1] - cfg.model.window) // 2
    assert signals.shape[-1] > width and window.shape == (12, width)
    np.testing.assert_array_equal(window, signals[0, :, offset:offset + width])
    # another seed masks other patches
    _, _, other = first_window_reconstruction(model, signals, lead_mask, seed=4)
    assert (other != mask).any()

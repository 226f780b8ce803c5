"""A model's checkpoint folder (``crema.model.checkpoint``) and the registry of architectures
(``crema.model.registry``): the config checks, the config -> module mapping and the weights-fit
checks of each architecture."""
from __future__ import annotations

import json
import re
import typing

import pytest
import torch

from crema.config import FinetuneConfig, ModelConfig, ResNet1dConfig
from crema.config_io import to_dict
from crema.errors import CheckpointError
from crema.model.checkpoint import (MODEL_FILE, check_checkpoint_config, load_config, load_encoder, load_network,
                                    write_checkpoint_files)
from crema.model.crema import CREMA
from crema.model.heads import Classifier
from crema.model.registry import ARCHS, KINDS, build_encoder, build_network
from crema.model.resnet1d import ResNet1d
from crema.model.sit import SiTEncoder

SIT = to_dict(ModelConfig(dim=16, depth=2, heads=2, stem_channels=8, window=200, patch_size=50,
                          decoder_dim=16, decoder_depth=1, decoder_heads=2, projector_hidden=16, projector_dim=8))
RESNET = to_dict(ResNet1dConfig(stem_width=8, widths=(8, 16), depths=(1, 2)))
REGRESSION = {"kind": "classifier", "arch": "sit", "model": SIT, "classes": ["age"], "task_type": "regression",
              "thresholds": None, "target_mean": 60.0, "target_std": 15.0}


@pytest.mark.parametrize("crop, accepted", [(None, True), (100, True), (0, False), (-50, False), ("wide", False),
                                            (True, False), (12.5, False)])
def test_a_regression_classifier_s_crop_is_checked(crop, accepted):
    """A regression head has null thresholds; its crop is checked all the same (it used to be
    skipped whenever thresholds were null)."""
    config = {**REGRESSION, "crop": crop}
    if accepted:
        check_checkpoint_config(config, "config.json")
    else:
        with pytest.raises(CheckpointError, match=r"^config.json: crop: expected a positive number of samples"):
            check_checkpoint_config(config, "config.json")


def test_a_classifier_with_null_thresholds_gets_every_check_through_load_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**REGRESSION, "crop": -1}))
    with pytest.raises(CheckpointError, match="config.json: crop"):
        load_config(tmp_path)
    multilabel = {**REGRESSION, "task_type": "multilabel", "classes": ["A", "B"], "crop": "all"}
    (tmp_path / "config.json").write_text(json.dumps(multilabel))
    with pytest.raises(CheckpointError, match="config.json: crop"):
        load_config(tmp_path)


def test_the_registry_covers_every_arch_a_classifier_can_be_trained_as():
    trainable = set(typing.get_args(typing.get_type_hints(FinetuneConfig)["arch"]))
    assert set(ARCHS) == trainable and set(KINDS) == {"pretrain", "classifier"}


@pytest.mark.parametrize("config, module", [
    ({"kind": "pretrain", "model": SIT}, CREMA),
    ({"kind": "classifier", "model": SIT, "classes": ["A", "B", "C"]}, Classifier),
    ({"kind": "classifier", "arch": "resnet1d", "model": RESNET, "classes": ["A", "B", "C"]}, ResNet1d),
])
def test_each_kind_and_arch_builds_its_module(config, module):
    network = build_network(config, "here")
    assert type(network) is module
    if module is not CREMA:
        assert network(torch.zeros(2, 12, 200)).shape == (2, 3)
    if config.get("arch", "sit") == "sit":
        assert type(build_encoder(config, "here")) is SiTEncoder
    else:
        with pytest.raises(CheckpointError, match="^here: a 'resnet1d' classifier has no SiT encoder"):
            build_encoder(config, "here")


@pytest.mark.parametrize("config, problem", [
    ({"kind": "pretrain", "arch": "resnet1d", "model": RESNET}, "arch: a 'resnet1d' model cannot be a pretrain"),
    ({"kind": "classifier", "arch": "vit", "model": SIT, "classes": ["A"]}, "unknown arch 'vit' (sit or resnet1d)"),
    ({"kind": "student", "model": SIT}, "unknown checkpoint kind 'student' (pretrain or classifier)"),
    ({"kind": ["classifier"], "model": SIT}, "unknown checkpoint kind ['classifier']"),
    ({"kind": "classifier", "arch": ["sit"], "model": SIT, "classes": ["A"]}, "unknown arch ['sit']"),
    ({"kind": "classifier", "arch": "resnet1d", "model": {**RESNET, "widths": "wide"}, "classes": ["A"]},
     "model.widths"),
])
def test_a_config_the_registry_cannot_build_is_refused_naming_the_field(config, problem):
    with pytest.raises(CheckpointError, match=f"^config.json: {re.escape(problem)}"):
        check_checkpoint_config(config, "config.json")


def test_a_resnet_config_that_does_not_fit_its_weights_is_refused_before_building(tmp_path):
    config = {"kind": "classifier", "arch": "resnet1d", "model": RESNET, "classes": ["A", "B"], "thresholds": None}
    write_checkpoint_files(tmp_path, ResNet1d.from_config(ResNet1dConfig(stem_width=8, widths=(8, 16), depths=(1, 2)),
                                                          2), config)
    network, _ = load_network(tmp_path)
    assert isinstance(network, ResNet1d) and sum(len(stage) for stage in network.stages) == 3
    with pytest.raises(CheckpointError, match="no SiT encoder"):
        load_encoder(tmp_path)
    for edit, problem in (({"widths": [8, 4096]}, "widths 4096 is no dimension of the model's weights"),
                          ({"depths": [1, 1]}, "sum of depths is 2 but the weights hold 3 stages")):
        (tmp_path / "config.json").write_text(json.dumps({**config, "model": {**RESNET, **edit}}))
        with pytest.raises(CheckpointError, match=f"{MODEL_FILE}: the config's model does not fit these weights: "
                                                  f"{problem}"):
            load_network(tmp_path)

"""The suite config (typed, JSON round trip, errors naming file and field), its step plan with
several pretraining seeds, and paired differences between methods."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from crema.config_io import to_dict
from crema.errors import ConfigError, CremaError
from crema.eval import metrics
from crema.eval.paired import MEAN_OF_SOURCES, paired_differences
from crema.eval.results import load_results, write_results
from crema.eval.suite import SuiteConfig, load_suite_config, plan_steps, suite_from_dict
from crema.eval.suite.plan import Encoder, Finetune, FinetuneCorruption, Pretrain, Probe
from crema.eval.suite.runner import identity

REPO = Path(__file__).resolve().parents[1]
SUITE_FILES = sorted((REPO / "configs").glob("suite-*.json")) + [REPO / "configs" / "ablation-lambda-tau.json"]
# What earlier runs saved, kept as a small fixture (the runs' raw results are not in the tree): per run,
# the suite inside its results.json, its suite.json file and the ids of the steps it ran, in order.
COMMITTED = json.loads((Path(__file__).parent / "data" / "committed_suites.json").read_text())


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: p.name)
def test_committed_suite_configs_round_trip(path):
    cfg = load_suite_config(path)
    # the default objective's screening recipe pairs three pretraining seeds; the rest pretrain once
    seeds = (0, 1, 2) if path.name == "suite-shared.json" else (0,)
    assert isinstance(cfg, SuiteConfig) and cfg.pretrain_seeds == seeds
    assert suite_from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_short_forms_mean_what_they_meant():
    """``size`` fills the preset's widths; a method lists only what differs from the shared objective."""
    raw = {"corpora": {"p": "x"}, "tasks": [{"corpus": "p", "task": "t"}],
           "pretrain": {"corpora": ["p:train"], "model": {"size": "mini", "depth": 2}, "objective": {"tau": 0.5}},
           "methods": {"mae": {"mode": "mae", "lambda_con": 0.0}}}
    cfg = suite_from_dict(raw)
    assert (cfg.pretrain.model.dim, cfg.pretrain.model.depth, cfg.pretrain.model.size) == (64, 2, "mini")
    assert (cfg.methods["mae"].mode, cfg.methods["mae"].tau, cfg.methods["mae"].lambda_con) == ("mae", 0.5, 0.0)
    assert set(suite_from_dict({k: v for k, v in raw.items() if k != "methods"}).methods) == {
        "crema", "mae", "contrastive"}
    assert cfg.tasks[0].fractions == (0.01, 0.1, 1.0) and cfg.leave_source_out is None


@pytest.mark.parametrize("run", sorted(COMMITTED))
def test_committed_runs_keep_their_meaning_and_step_ids(run):
    """The untyped configs saved by earlier runs read as the same suite and plan the same steps."""
    saved = COMMITTED[run]
    ids = saved["step_ids"]
    sources = sorted({i.split("holdout-")[1].split("/")[0] for i in ids if "holdout-" in i})
    for raw in (saved["results_suite"], saved["suite_json"]):
        assert [s.id for s in plan_steps(suite_from_dict(raw), sources)] == ids


@pytest.mark.parametrize("run, config", [("card", "suite-card.json"), ("shared-default", "suite-shared.json")])
def test_committed_configs_are_the_runs_that_made_the_results(run, config):
    saved = suite_from_dict(COMMITTED[run]["suite_json"])
    assert identity(saved) == identity(load_suite_config(REPO / "configs" / config))


@pytest.mark.parametrize("change, message", [
    ({"method": {}}, "SuiteConfig: unknown config keys ['method']"),
    ({"tasks": [{"corpus": "p"}]}, "tasks.0: missing required keys ['task']"),
    ({"tasks": [{"corpus": "p", "task": "t", "protocols": ["fintune"]}]}, "tasks.0.protocols: expected a list"),
    ({"pretrain_seeds": [0, 0]}, "pretrain_seeds: must be distinct"),
    ({"pretrain_seeds": 1}, "pretrain_seeds: expected a list"),
    ({"methods": {"crema": {"lamda": 1}}}, "methods.crema: unknown config keys ['lamda']"),
    ({"pretrain": {"corpora": ["p"], "train": {"seed": 3}}}, "pretrain.train.seed: set by the suite"),
    ({"pretrain": {"corpora": ["p"], "model": {"size": "huge"}}}, "pretrain.model.size: unknown preset 'huge'"),
    ({"pretrain": {"corpora": ["p"], "model": {"size": "w96", "dim": 96}}}, "give depth, dim, heads for a size"),
    ({"pretrain": {"corpora": ["p"], "model": {"dim": 0}}}, "pretrain.model.dim: must be positive"),
    ({"finetune": {"epochs": "3"}}, "finetune.epochs: expected an integer"),
    ({"baselines": ["random_forest"]}, "baselines: expected a list whose items are each one of"),
    ({"corruptions": {"corpus": "p", "task": "t", "names": ["fog"]}}, "corruptions.names: unknown corruptions"),
    ({"tasks": [{"corpus": "q", "task": "t"}]}, "corpus 'q' is used but not defined"),
    ({"methods": {"a/b": {}}}, "methods: names ['a/b'] may not"),
])
def test_bad_suite_configs_name_the_file_and_the_field(tmp_path, change, message):
    base = {"corpora": {"p": "x"}, "tasks": [{"corpus": "p", "task": "t"}], "pretrain": {"corpora": ["p"]}}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({**base, **change}))
    with pytest.raises(ConfigError) as info:
        load_suite_config(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_plan_with_two_pretraining_seeds():
    cfg = suite_from_dict({
        "corpora": {"p": "x", "c": "y"}, "pretrain": {"corpora": ["p"]}, "pretrain_seeds": [0, 1],
        "methods": {"crema": {}, "mae": {"mode": "mae"}}, "seeds": [0, 1],
        "baselines": ["random_sit", "supervised_sit"],
        "tasks": [{"corpus": "p", "task": "t", "fractions": [0.1, 1.0], "finetune_fractions": [1.0]}],
        "leave_source_out": {"corpus": "c", "task": "u"},
        "corruptions": {"corpus": "p", "task": "t", "protocols": ["finetune"]}})
    steps = plan_steps(cfg, ["georgia"])
    assert [s for s in steps if isinstance(s, Pretrain)] == [
        Pretrain(Encoder("crema", 0)), Pretrain(Encoder("crema", 1)), Pretrain(Encoder("mae", 0)),
        Pretrain(Encoder("mae", 1))]
    ids = [s.id for s in steps]
    assert len(set(ids)) == len(ids)
    assert {"pretrain/crema", "pretrain/crema@seed1", "probe/random_sit@seed1/t", "probe/mae/u/holdout-georgia",
            "finetune/crema@seed1/t/f1/s1", "finetune/supervised_sit/t/f1/s0"} <= set(ids)
    # random init is seeded per pretraining seed; a SiT trained from scratch has no pretraining seed
    assert {s.encoder for s in steps if isinstance(s, Probe) and s.encoder.method == "random_sit"} == {
        Encoder("random_sit", 0), Encoder("random_sit", 1)}
    assert {s.encoder.pretrain_seed for s in steps if isinstance(s, Finetune)
            and s.encoder.method == "supervised_sit"} == {None}
    # a corruption step names the fine-tune it corrupts, and that fine-tune is planned before it
    for step in (s for s in steps if isinstance(s, FinetuneCorruption)):
        assert steps.index(step.after) < steps.index(step) and step.after.fraction == 1.0


def _result(method, pretrain_seed, seed, macro, replicates, rows="r1", protocol="probe"):
    return {"method": method, "pretrain_seed": pretrain_seed, "seed": seed, "task": "t", "protocol": protocol,
            "experiment": "label_fraction", "fraction": 1.0, "holdout_source": None, "test_rows_sha256": rows,
            "auroc": {"macro": macro}, "bootstrap": {"n_resamples": len(replicates), "seed": 0},
            "bootstrap_auroc": list(replicates)}


def test_paired_differences_match_seeds_and_records():
    rng = np.random.default_rng(0)
    shared = rng.normal(0.8, 0.05, 200)  # what both methods share: which records were drawn
    results = []
    for ps, gap in ((0, 0.02), (1, 0.04)):
        results += [_result("crema", ps, 0, 0.8 + gap, shared + gap), _result("mae", ps, 0, 0.8, shared)]
    results.append(_result("mae", 2, 0, 0.1, shared - 0.7))                   # no crema on seed 2: unpaired
    results.append(_result("random_sit", 0, 0, 0.5, shared, rows="other"))  # other test records: not paired
    (d,) = paired_differences(results)
    assert (d.method, d.reference, d.n_pairs, d.wins) == ("crema", "mae", 2, "2/2")
    assert d.difference == pytest.approx(0.03) and d.per_pretrain_seed == pytest.approx({0: 0.02, 1: 0.04})
    assert d.low == pytest.approx(0.03) and d.high == pytest.approx(0.03)  # the shared part cancels


def test_a_further_reference_pairs_a_new_encoder_with_an_old_one():
    """``references``: a given encoder (no baseline, not MAE) becomes a reference too."""
    shared = np.random.default_rng(2).normal(0.8, 0.05, 200)
    results = [_result("crema", 0, s, 0.83, shared + 0.03) for s in (0, 1)]
    results += [_result("crema-mini-ecg12", 0, s, 0.8, shared) for s in (0, 1)]
    assert paired_differences(results) == []  # neither is a default reference
    (d,) = paired_differences(results, ["crema-mini-ecg12"])
    assert (d.method, d.reference, d.n_pairs) == ("crema", "crema-mini-ecg12", 2)
    assert d.difference == pytest.approx(0.03)


def test_a_reference_without_pretraining_seed_pairs_on_the_seed():
    reps = np.linspace(0.6, 0.7, 50)
    results = [_result("crema", ps, s, 0.7, reps, protocol="finetune") for ps in (0, 1) for s in (0, 1)]
    results += [_result("supervised_sit", None, s, 0.6, reps - 0.1, protocol="finetune") for s in (0, 1)]
    (d,) = paired_differences(results)
    assert (d.reference, d.n_pairs) == ("supervised_sit", 4) and d.difference == pytest.approx(0.1)


def test_results_read_the_same_from_a_gzip_copy_and_a_broken_one_is_named(tmp_path):
    (tmp_path / "plain").mkdir()
    write_results(tmp_path / "plain" / "results.json", [{"method": "crema", "seed": 0}], {"p": "sha"})
    plain = load_results(tmp_path / "plain")
    (tmp_path / "packed").mkdir()
    packed = (tmp_path / "packed" / "results.json.gz")
    packed.write_bytes(gzip.compress((tmp_path / "plain" / "results.json").read_bytes()))
    assert load_results(tmp_path / "packed") == plain == load_results(packed)
    packed.write_bytes(packed.read_bytes()[:20])  # cut short
    with pytest.raises(CremaError, match="results.json.gz: not valid JSON"):
        load_results(tmp_path / "packed")


def test_leave_source_out_pairs_each_source_and_their_mean():
    rng = np.random.default_rng(1)
    results = []
    for source, gap in (("georgia", 0.02), ("ningbo", 0.06)):
        shared = rng.normal(0.7, 0.05, 100)
        for ps in (0, 1):
            for method, macro, reps in (("crema", 0.7 + gap, shared + gap), ("mae", 0.7, shared)):
                results.append({**_result(method, ps, 0, macro, reps, rows=source),
                                "experiment": "leave_source_out", "fraction": None, "holdout_source": source})
    by_source = {d.setting["holdout_source"]: d for d in paired_differences(results)}
    assert set(by_source) == {"georgia", "ningbo", MEAN_OF_SOURCES}
    mean = by_source[MEAN_OF_SOURCES]
    assert (mean.method, mean.reference, mean.n_pairs, mean.wins) == ("crema", "mae", 2, "2/2")
    assert mean.difference == pytest.approx(0.04) and mean.low == pytest.approx(0.04)
    # a source where the method has no result leaves the mean out rather than averaging fewer sources
    ningbo_crema = [r for r in results if not (r["holdout_source"] == "ningbo" and r["method"] == "crema")]
    assert MEAN_OF_SOURCES not in {d.setting["holdout_source"] for d in paired_differences(ningbo_crema)}


def test_paired_bootstrap_is_narrower_than_separate_intervals():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 4)) < 0.3).astype(int)
    hard = rng.normal(size=(300, 4))  # record difficulty both scorers share
    a, b = y + hard + 0.6 * rng.normal(size=(300, 4)), y + hard + 0.7 * rng.normal(size=(300, 4))
    diff, low, high = metrics.paired_bootstrap_auroc(y, a, b, 1000, seed=0)
    assert diff == pytest.approx(metrics.auroc(y, a).macro - metrics.auroc(y, b).macro)
    separate = [metrics.percentile_interval(metrics.bootstrap_auroc(y, s, 1000, 0)) for s in (a, b)]
    assert low <= diff <= high and high - low < min(hi - lo for lo, hi in separate)


def test_a_run_folder_from_before_the_typed_config_resumes(tmp_path):
    """``OUT/suite.json`` in the old untyped form counts as the same suite; a changed one is refused."""
    from crema.eval.suite import Suite

    out = tmp_path / "shared"
    (out / "steps").mkdir(parents=True)
    (out / "steps" / "pretrain").mkdir()
    (out / "steps" / "pretrain" / "crema.json").write_text("{}")
    old_form = json.dumps(COMMITTED["shared"]["suite_json"], indent=2)
    assert "pretrain_seeds" not in old_form  # written before the typed config
    (out / "suite.json").write_text(old_form)
    cfg = suite_from_dict(json.loads(old_form))
    with pytest.raises(CremaError, match="--resume"):
        Suite(cfg, out).claim_folder(resume=False)
    Suite(cfg, out).claim_folder(resume=True)
    assert suite_from_dict(json.loads((out / "suite.json").read_text())) == cfg  # now written typed
    two_seeds = suite_from_dict({**to_dict(cfg), "pretrain_seeds": [0, 1]})
    with pytest.raises(CremaError, match="differs from the one this run started with"):
        Suite(two_seeds, out).claim_folder(resume=True)

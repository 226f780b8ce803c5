"""``crema evaluate``: the whole evaluation protocol of a pretraining recipe, as resumable steps.

For one recipe (model, objective, pretraining data and schedule) a suite runs, with the same
data and seeds for every method:

* pretraining of each method in ``methods`` (default CREMA with the recipe's lambda, MAE only,
  contrastive only), once per seed in ``pretrain_seeds``, through :func:`crema.train.pretrain.pretrain`;
* linear probes of every pretrained encoder and of a randomly initialised SiT (``random_sit``, one
  per pretraining seed), at every label fraction and seed, on every task in ``tasks``;
* fine-tuning of every pretrained encoder, and supervised training from scratch of a SiT
  (``supervised_sit``) and of the 1-D ResNet (``supervised_resnet1d``);
* leave-one-source-out on a multi-source corpus (CinC): train on the other sources, test on the
  held-out one (classes absent from it are skipped and named);
* test-time corruptions at graded severities (AUROC vs severity) for probes and fine-tunes.

Each unit of work is a step whose outcome is saved as ``<out>/steps/<step id>.json`` the moment it
finishes; ``--resume`` skips finished steps and continues an interrupted pretraining from its
checkpoint. ``results.json`` (all results so far) is rewritten after every step, so
``crema report OUT`` works at any time. A step that cannot run on the data (e.g. a task without
labelled test rows) is recorded as skipped with the reason and does not stop the suite.

Modules: :mod:`.config` (the typed suite config, ``docs/EVALUATION.md`` lists its fields),
:mod:`.plan` (the steps as typed values, in order), :mod:`.workspace` (corpora and encoders the
steps share), :mod:`.work` (what each kind of step does), :mod:`.runner` (the resumable loop).
"""
from .config import SuiteConfig, load_suite_config, suite_from_dict
from .plan import Encoder, plan_steps
from .runner import Suite, run_suite, torch_threads

__all__ = ["SuiteConfig", "load_suite_config", "suite_from_dict", "Encoder", "plan_steps", "Suite", "run_suite",
           "torch_threads"]

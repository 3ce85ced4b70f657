"""Every experiment composes into typed configs; typos, wrong types and bad values fail at start."""

import pathlib
import types

import numpy as np
import pytest
import yaml
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException

from experiments.config import RENAMED_KEYS, compose, register_configs, renamed_key_errors
from experiments.optimizers import OPTIMIZERS
from experiments.runtime.mesh import check_batch_divisible
from experiments.studies import STUDIES

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "exp").glob("*.yaml"))


def test_there_are_experiments():
    assert "quickstart" in EXPERIMENTS and "nanogpt_muon" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_into_checked_objects(name):
    header = (CONFIG_DIR / "exp" / f"{name}.yaml").read_text()
    assert header.startswith("# @package _global_"), f"configs/exp/{name}.yaml: not _global_"
    for word in ("ommand", "xpected", "untime"):  # header gives command, expected result, runtime
        assert word in header, f"configs/exp/{name}.yaml header lacks its {word!r} line"
    cfg = compose([f"+exp={name}"])  # every __post_init__ check runs here
    assert cfg.exp_name == name and cfg.study.name in STUDIES
    assert type(cfg.study).__module__ == f"experiments.studies.{cfg.study.name}"


def _registered_default(group: str, choice: str):
    register_configs()
    return ConfigStore.instance().load(f"{group}/{choice}.yaml").node


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_files_hold_only_values_that_differ_from_the_defaults(name):
    """No default is written in two places: an exp file restating a default fails here."""
    delta = yaml.safe_load((CONFIG_DIR / "exp" / f"{name}.yaml").read_text())
    choices = {"trainer": "default", "logger": "local"}
    for entry in delta.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                choices[key.removeprefix("override /")] = value
    for group, values in delta.items():
        if group in ("defaults", "exp_name") or not isinstance(values, dict):
            continue
        default = _registered_default(group, choices[group])
        for key, value in values.items():
            assert default[key] != value, (
                f"configs/exp/{name}.yaml restates the default {group}.{key}={value!r}"
            )


@pytest.mark.parametrize("optim", sorted(OPTIMIZERS))
def test_every_optimizer_config_composes_and_builds(optim):
    cfg = compose(["+exp=quickstart", f"optim={optim}"])
    assert cfg.optim.name == optim and isinstance(cfg.optim, OPTIMIZERS[optim])
    assert cfg.optim.build(cfg.trainer.max_steps) is not None


def _composition_error(*overrides) -> str:
    with pytest.raises(ConfigCompositionException) as err:
        compose(list(overrides))
    return str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_step=3", "max_step"),  # typo in the trainer
        ("optim.lrr=0.1", "lrr"),  # typo in an optimizer
        ("study.batch=4", "batch"),  # typo in a study
        ("study.dim=abc", "dim"),  # wrong type in a study
        ("trainer.max_steps=abc", "max_steps"),  # wrong type in the trainer
        ("seed=abc", "seed"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_composition(override, key):
    text = _composition_error("+exp=quickstart", override)
    assert (key in text and "Could not override" in text) or "Error merging" in text


def test_nanogpt_model_and_data_groups_are_typed():
    assert "widht" in _composition_error("+exp=nanogpt_adamw", "model.widht=64")
    assert "dowload" in _composition_error("+exp=nanogpt_adamw", "data.dowload=false")


def test_unknown_experiment_and_optimizer_list_the_valid_ones():
    text = _composition_error("+exp=quickstrt")
    assert "quickstart" in text and "Available options" in text
    text = _composition_error("+exp=quickstart", "optim=adamm")
    assert "adamw" in text and "gated_spectral" in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-0.1", r"optim.lr must be a finite number in \(0.0, inf\), got -0.1"),
        ("optim.lr=0", r"optim.lr must be a finite number in \(0.0, inf\), got 0"),
        ("optim.lr=inf", r"optim.lr must be a finite number in \(0.0, inf\), got inf"),
        ("optim.weight_decay=-0.1", "optim.weight_decay must be a finite number in"),
        ("optim.momentum=1.0", r"optim.momentum must be a finite number in \[0.0, 1.0\)"),
        ("optim.schedule=cosin", "optim.schedule must be one of"),
        ("optim.name=adamw", "optim.name='adamw' does not match optim=sgd"),
        ("trainer.max_steps=0", "trainer.max_steps must be a positive int, got 0"),
        ("trainer.log_every=-1", "trainer.log_every must be a positive int, got -1"),
        ("trainer.eval_every=-1", r"trainer.eval_every must be an int >= 0 \(0 = off\)"),
        ("trainer.progress=fancy", "trainer.progress must be one of"),
        ("trainer.distributed=maybe", "trainer.distributed must be one of"),
        ("logger.mode=loud", "logger.mode must be one of"),
        ("seed=-1", "seed must be an int >= 0"),
        ("study.noise=-1.0", "study.noise must be >= 0"),
        ("study.val_size=0", "study.val_size must be a positive int, got 0"),
        ("study.name=nanogpt", "study.name='nanogpt' does not match the study group's config"),
    ],
)
def test_bad_values_are_rejected_before_compile(override, message):
    with pytest.raises(ValueError, match=message):
        compose(["+exp=quickstart", override])


@pytest.mark.parametrize(
    ("optim", "override", "message"),
    [
        ("adamw", "optim.b1=1.0", r"optim.b1 must be a finite number in \[0.0, 1.0\)"),
        ("adamw", "optim.eps=0", r"optim.eps must be a finite number in \(0.0, inf\)"),
        ("muon", "optim.iters=0", "optim.iters must be a positive int, got 0"),
        ("muon", "optim.method=newton", "optim.method must be one of"),
        ("muon", "optim.adam_b2=1.5", r"optim.adam_b2 must be a finite number in \[0.0, 1.0\)"),
        ("muon", "optim.adam_weight_decay=-1.0", "optim.adam_weight_decay must be a finite"),
        ("spectra_adamw", "optim.c=0", r"optim.c must be a finite number in \(0.0, inf\)"),
        ("spectra_adamw", "optim.clip_iters=0", "optim.clip_iters must be a positive int"),
        ("spectra_adamw", "optim.kind=medium", "optim.kind must be one of"),
        ("gated_spectral", "optim.euclidean=lion", "optim.euclidean must be one of"),
    ],
)
def test_optimizer_specific_values_are_checked(optim, override, message):
    with pytest.raises(ValueError, match=message):
        compose(["+exp=quickstart", f"optim={optim}", override])


def test_schedule_is_checked_against_the_trainer_length():
    with pytest.raises(ValueError, match=r"must exceed optim.warmup_steps=100"):
        compose(["+exp=nanogpt_adamw", "trainer.max_steps=50"])


def test_nanogpt_model_values_are_checked():
    with pytest.raises(ValueError, match=r"model.width=130 must be divisible by model.num_heads=4"):
        compose(["+exp=nanogpt_adamw", "model.width=130"])
    with pytest.raises(ValueError, match=r"data.train_fraction must be in \(0, 1\), got 1.5"):
        compose(["+exp=nanogpt_adamw", "data.train_fraction=1.5"])


def test_renamed_keys_name_their_new_name():
    assert RENAMED_KEYS["optim.clip_steps"] == "optim.clip_iters"
    errors = renamed_key_errors(["+exp=nanogpt_spectra", "optim.clip_steps=3", "optim.steps=5"])
    assert errors == [
        "optim.clip_steps was renamed to optim.clip_iters; use optim.clip_iters=...",
        "optim.steps was renamed to optim.iters; use optim.iters=...",
    ]
    assert renamed_key_errors(["optim.iters=5", "trainer.max_steps=3"]) == []
    assert renamed_key_errors(["study.large=null"]) == [
        "study.large=null is no longer accepted; use study.large.enabled=false"
    ]


def test_batch_not_divisible_by_devices_names_the_count():
    eight = types.SimpleNamespace(devices=np.empty(8))
    check_batch_divisible({"x": np.zeros((32, 3))}, eight)
    with pytest.raises(ValueError, match=r"must be divisible by the device count 8"):
        check_batch_divisible({"x": np.zeros((30, 3))}, eight)


def test_no_study_says_how_to_pick_one():
    with pytest.raises(ValueError, match=r"\+exp=NAME"):
        compose([])

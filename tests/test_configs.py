"""Every experiment config composes against the schemas; typos and bad values fail at start."""

import pathlib

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from experiments.runtime.validate import validate_config
from experiments.schema import OPTIM_SCHEMAS, register_schemas

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "exp").glob("*.yaml"))
register_schemas()


def _compose(*overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_there_are_experiments():
    assert "quickstart" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    header = (CONFIG_DIR / "exp" / f"{name}.yaml").read_text()
    assert header.startswith("# @package _global_"), (
        f"configs/exp/{name}.yaml must be a _global_ delta"
    )
    for word in ("ommand", "xpected", "untime"):  # header gives command, expected result, runtime
        assert word in header, f"configs/exp/{name}.yaml header lacks its {word!r} line"
    cfg = _compose(f"+exp={name}")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.study.name, f"+exp={name} selects no study"
    validate_config(cfg)


@pytest.mark.parametrize("optim", sorted(OPTIM_SCHEMAS))
def test_every_optimizer_config_composes(optim):
    cfg = _compose("study=quickstart", f"optim={optim}")
    assert cfg.optim.name == optim
    validate_config(cfg)


def test_trainer_typo_names_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        _compose("+exp=quickstart", "trainer.max_step=3")
    assert "max_step" in str(err.value.__cause__) or "max_step" in str(err.value)


def test_wrong_type_names_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        _compose("+exp=quickstart", "trainer.max_steps=abc")
    text = str(err.value) + str(err.value.__cause__)
    assert "max_steps" in text and "abc" in text


def test_optim_typo_names_the_key():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        _compose("+exp=quickstart", "optim.lrr=0.1")
    assert "lrr" in str(err.value) + str(err.value.__cause__)


def test_unknown_experiment_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as err:
        _compose("+exp=quickstrt")
    assert "quickstart" in str(err.value) and "Available options" in str(err.value)


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as err:
        _compose("+exp=quickstart", "optim=adamm")
    text = str(err.value)
    assert (
        "adamw" in text
        and "schema" not in text.split("Available options")[1].split("Config search")[0]
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-0.1", "optim.lr must be a positive number"),
        ("optim.lr=0", "optim.lr must be a positive number"),
        ("trainer.max_steps=0", "trainer.max_steps must be a positive int"),
        ("trainer.log_every=-1", "trainer.log_every must be a positive int"),
        ("trainer.progress=fancy", "trainer.progress must be one of"),
        ("seed=-1", "seed must be a non-negative int"),
        ("optim.schedule=cosin", "optim.schedule must be one of"),
    ],
)
def test_bad_values_are_rejected_before_compile(override, message):
    cfg = _compose("+exp=quickstart", override)
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


def test_batch_not_divisible_by_devices():
    cfg = _compose("+exp=quickstart", "study.batch_size=30")
    validate_config(cfg, device_count=2)
    with pytest.raises(
        ValueError, match=r"study.batch_size=30 is not divisible by the device count 8"
    ):
        validate_config(cfg, device_count=8)


def test_no_study_says_how_to_pick_one():
    with pytest.raises(ValueError, match=r"\+exp=NAME"):
        validate_config(_compose())

"""Typed experiment config: strict keys with hints, checked types, overrides, round trip."""

from pathlib import Path

import pytest
import torch
import yaml

import qualiface
from qualiface.config import ConfigError, ExperimentConfig, config_from_dict, dump_config, load_config, to_dict

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_defaults_are_a_valid_experiment() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.optim.lr == 0.1
    assert cfg.schedule.name == "poly"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_builds(path: Path) -> None:
    cfg = load_config(path)
    with torch.device("meta"):  # checks the component kwargs without allocating an iResNet-100
        backbone = qualiface.create_backbone(cfg.model.backbone, **cfg.model.kwargs)
        qualiface.create_head(cfg.head.name, embedding_dim=backbone.embedding_dim, num_classes=10, **cfg.head.kwargs)


def test_there_is_a_tiny_synthetic_config() -> None:
    assert any(p.name == "synthetic_tiny.yaml" for p in CONFIGS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
        ({"train": {"stesp": 3}}, "unknown key 'train.stesp'; did you mean 'steps'?"),
        (
            {"data": {"synthetic": {"num_identites": 3}}},
            "'data.synthetic.num_identites'; did you mean 'num_identities'",
        ),
        ({"head": {"name": "arcfce"}}, "head.name: unknown head 'arcfce'; did you mean 'arcface'?"),
        ({"model": {"backbone": "iresnet51"}}, "model.backbone: unknown backbone 'iresnet51'"),
        ({"train": {"steps": "ten"}}, "train.steps: expected an integer, got 'ten'"),
        ({"train": {"steps": 2.5}}, "train.steps: expected an integer"),
        ({"train": {"precision": "fp8"}}, "train.precision: 'fp8' is not one of"),
        ({"log": {"progress": "yes"}}, "log.progress: expected true or false"),
        ({"eval": {"sets": [{"kind": "bin"}]}}, "eval.sets[0]: kind 'bin' needs a path"),
        ({"head": {"sample_rate": 1.5}}, "head.sample_rate: must be a finite number > 0 and <= 1, got 1.5"),
        ({"train": {"steps": None, "epochs": None}}, "set train.steps or train.epochs"),
        ({"model": []}, "model: expected a mapping"),
    ],
)
def test_bad_values_raise_a_clear_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_overrides_are_parsed_as_yaml_and_typed() -> None:
    cfg = config_from_dict(
        {},
        [
            "train.steps=20",
            "optim.lr=1e-2",
            "head.kwargs.margin=0.3",
            "head.name=magface",
            "log.progress=false",
            "eval.sets=[{kind: synthetic, num_pairs: 50}]",
            "schedule.milestones=[1, 2.5]",
        ],
    )
    assert cfg.train.steps == 20
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.head.kwargs == {"margin": 0.3}
    assert cfg.head.name == "magface"
    assert cfg.log.progress is False
    assert cfg.eval.sets[0].num_pairs == 50
    assert cfg.schedule.milestones == [1.0, 2.5]


def test_exponent_without_a_dot_is_a_number_for_float_fields(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n")  # YAML 1.1 reads these as strings
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.optim.weight_decay == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number"):
        config_from_dict({"optim": {"lr": "fast"}})


def test_an_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"must look like key\.path=value"):
        config_from_dict({}, ["train.steps"])


def test_an_override_of_an_unknown_key_is_rejected_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        config_from_dict({}, ["optim.lrr=0.1"])


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  stpes: 3\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown key 'train\.stpes'"):
        load_config(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:2:1: not valid YAML: expected ',' or '\]'") as info:
        load_config(path)
    assert "\n" not in str(info.value)  # PyYAML's text quotes the source over several lines, with a caret
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    cfg = config_from_dict({"head": {"name": "adaface", "kwargs": {"h": 0.5}}}, ["train.steps=7"])
    path = tmp_path / "resolved.yaml"
    dump_config(cfg, path)
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)
    assert yaml.safe_load(path.read_text())["head"]["kwargs"] == {"h": 0.5}

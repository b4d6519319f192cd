"""Hostile configs: YAML aliases (billion laughs), duplicate keys and oversized files are refused before they are
expanded; out-of-range and non-finite values are refused naming the dotted field."""

from pathlib import Path

import pytest

from qualiface.config import ConfigError, config_from_dict, dump_config, load_config, to_dict
from qualiface.config.io import MAX_CONFIG_BYTES, load_yaml

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))

# Nine levels of nine aliases: 9**9 (~3.9e8) strings once expanded.
BILLION_LAUGHS = "\n".join(
    [
        'name: &a0 "lol"',
        *(f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)),
        "model: {kwargs: {x: *a9}}",
    ]
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_billion_laughs_is_refused_at_the_first_anchor(tmp_path: Path) -> None:
    path = _write(tmp_path, BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1_000
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:1: YAML anchors are not allowed (&a0)"


def test_an_alias_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\noptim:\n  lr: *fast\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:3: YAML aliases are not allowed \(\*fast\)"):
        load_config(path)


def test_a_duplicate_key_is_refused_with_its_name_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:4: duplicate key 'lr'"
    with pytest.raises(ConfigError, match=r"exp\.yaml:2: duplicate key 'optim'"):
        load_config(_write(tmp_path, "optim: {lr: 0.1}\noptim: {lr: 0.2}\n"))


def test_an_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    path = _write(tmp_path, "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"exp\.yaml: the config is larger than 1,048,576 bytes"):
        load_config(path)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: the config is not UTF-8"):
        load_config(path)


def test_overrides_are_read_by_the_strict_loader() -> None:
    with pytest.raises(ConfigError, match="YAML anchors are not allowed"):
        config_from_dict({}, ["eval.sets=[&s {kind: synthetic}, *s]"])
    with pytest.raises(ConfigError, match="duplicate key 'margin'"):
        config_from_dict({}, ["head.kwargs={margin: 0.3, margin: 0.5}"])


def test_load_yaml_reads_plain_yaml() -> None:
    assert load_yaml("a: [1, 2.5, x]\nb: {c: null}\n") == {"a": [1, 2.5, "x"], "b": {"c": None}}


def test_shared_objects_are_written_out_and_read_back() -> None:
    shared = [0.0, 1.0]
    cfg = config_from_dict({"data": {"synthetic": {"severity_range": shared}}, "head": {"kwargs": {"r": shared}}})
    assert cfg.head.kwargs["r"] == [0.0, 1.0]
    assert "&" not in dump_config(cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {num_classes: 2000000000}", "data.num_classes: must be an integer >= 1 and <= 100,000,000"),
        ("model: {kwargs: {embedding_dim: 100000000}}", "model.kwargs.embedding_dim: must be an integer >= 1 and <="),
        ("optim: {weight_decay: -5}", "optim.weight_decay: must be a finite number >= 0 and <= 1, got -5.0"),
        ("schedule: {power: .nan}", "schedule.power: must be a finite number > 0, got nan"),
        ("optim: {lr: .inf}", "optim.lr: must be a finite number > 0 and <= 10, got inf"),
        ("optim: {lr: 1e300}", "optim.lr: must be a finite number > 0 and <= 10, got 1e+300"),
        ("train: {epochs: .inf}", "train.epochs: must be a finite number > 0 and <= 1,000,000, got inf"),
    ],
)
def test_the_attack_values_are_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + "\n"))
    assert message in str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'exp.yaml'}: ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"optim": {"lr": 0}}, "optim.lr: must be a finite number > 0"),
        ({"optim": {"lr": 11}}, "optim.lr: must be a finite number > 0 and <= 10, got 11.0"),
        ({"optim": {"lr": 10**400}}, "optim.lr: must be a finite number, got a 1329-bit integer"),
        ({"optim": {"head_lr": float("nan")}}, "optim.head_lr: must be a finite number > 0 and <= 10"),
        ({"optim": {"head_weight_decay": -1}}, "optim.head_weight_decay: must be a finite number >= 0"),
        ({"optim": {"momentum": 1.0}}, "optim.momentum: must be a finite number >= 0 and < 1"),
        ({"optim": {"momentum": 0.0, "nesterov": True}}, "optim.nesterov: Nesterov momentum needs optim.momentum > 0"),
        ({"optim": {"betas": [0.9, 1.0]}}, "optim.betas[1]: must be a finite number >= 0 and < 1"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: must be two numbers"),
        ({"schedule": {"power": 0}}, "schedule.power: must be a finite number > 0"),
        ({"schedule": {"gamma": 2.0}}, "schedule.gamma: must be a finite number > 0 and <= 1"),
        ({"schedule": {"min_lr_ratio": -0.1}}, "schedule.min_lr_ratio: must be a finite number >= 0 and <= 1"),
        ({"schedule": {"warmup_epochs": float("inf")}}, "schedule.warmup_epochs: must be a finite number >= 0"),
        ({"schedule": {"warmup_steps": -1}}, "schedule.warmup_steps: must be an integer >= 0"),
        ({"schedule": {"milestones": [1, float("nan")]}}, "schedule.milestones[1]: must be a finite number >= 0"),
        ({"train": {"steps": 10**10}}, "train.steps: must be an integer >= 1 and <= 1,000,000,000"),
        ({"train": {"steps": 0}}, "train.steps: must be an integer >= 1"),
        ({"train": {"epochs": 0}}, "train.epochs: must be a finite number > 0"),
        ({"train": {"grad_clip": float("inf")}}, "train.grad_clip: must be a finite number > 0 (or null"),
        ({"train": {"seed": -1}}, "train.seed: must be an integer >= 0"),
        ({"train": {"log_every": 0}}, "train.log_every: must be an integer >= 1"),
        ({"train": {"checkpoint_every": 0}}, "train.checkpoint_every: must be an integer >= 1"),
        ({"train": {"keep_checkpoints": 0}}, "train.keep_checkpoints: must be an integer >= 1"),
        ({"data": {"batch_size": 0}}, "data.batch_size: must be an integer >= 1 and <= 65,536"),
        ({"data": {"batch_size": 10**6}}, "data.batch_size: must be an integer >= 1 and <= 65,536"),
        ({"data": {"num_workers": -1}}, "data.num_workers: must be an integer >= 0"),
        ({"data": {"num_classes": 0}}, "data.num_classes: must be an integer >= 1"),
        ({"data": {"augment_p": 1.5}}, "data.augment_p: must be a finite number >= 0 and <= 1"),
        ({"data": {"synthetic": {"size": 10**5}}}, "data.synthetic.size: must be an integer >= 8 and <= 1,024"),
        ({"data": {"synthetic": {"num_identities": 0}}}, "data.synthetic.num_identities: must be an integer >= 1"),
        (
            {"data": {"synthetic": {"num_identities": 10**6, "images_per_identity": 10**3}}},
            "data.synthetic: num_identities × images_per_identity must be <= 100,000,000",
        ),
        ({"data": {"synthetic": {"clean_fraction": float("nan")}}}, "data.synthetic.clean_fraction: must be a finite"),
        ({"data": {"synthetic": {"severity_range": [0.8, 0.2]}}}, "data.synthetic.severity_range: must be [low, high]"),
        ({"data": {"synthetic": {"seed": -3}}}, "data.synthetic.seed: must be an integer >= 0"),
        ({"head": {"sample_rate": float("nan")}}, "head.sample_rate: must be a finite number > 0 and <= 1, got nan"),
        ({"head": {"kwargs": {"margin": float("inf")}}}, "head.kwargs.margin: must be a finite number, got inf"),
        ({"model": {"kwargs": {"embedding_dim": 0}}}, "model.kwargs.embedding_dim: must be an integer >= 1"),
        ({"model": {"kwargs": {"embedding_dim": True}}}, "model.kwargs.embedding_dim: must be an integer"),
        ({"model": {"kwargs": {"opts": [1.0, float("-inf")]}}}, "model.kwargs.opts[1]: must be a finite number"),
        ({"eval": {"every": -1}}, "eval.every: must be an integer >= 0"),
        ({"eval": {"batch_size": 0}}, "eval.batch_size: must be an integer >= 1"),
        ({"eval": {"sets": [{"num_pairs": 10**8}]}}, "eval.sets[0].num_pairs: must be an integer >= 1 and <="),
        ({"eval": {"sets": [{"num_pairs": 7}]}}, "eval.sets[0].num_pairs: synthetic pairs need an even count"),
    ],
)
def test_every_numeric_field_is_bounded(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_the_bounds_themselves_are_accepted() -> None:
    cfg = config_from_dict(
        {
            "model": {"kwargs": {"embedding_dim": 65_536}},
            "data": {"num_classes": 10**8, "batch_size": 65_536, "augment_p": 1.0},
            "optim": {"lr": 10, "weight_decay": 0, "head_lr": 1e-6, "betas": [0.0, 0.999]},
            "schedule": {"power": 2.0, "gamma": 1.0, "min_lr_ratio": 1.0, "milestones": [0, 3.5]},
            "train": {"steps": 10**9, "epochs": None, "seed": 2**63 - 1, "grad_clip": None},
            "eval": {"every": 0},
        }
    )
    assert cfg.data.num_classes == 10**8
    assert cfg.optim.lr == 10.0


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_with_the_strict_loader(path: Path) -> None:
    cfg = load_config(path)
    assert load_config(path, ()).name == cfg.name
    assert to_dict(config_from_dict(to_dict(cfg))) == to_dict(cfg)

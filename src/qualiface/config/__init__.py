"""Typed experiment configuration: dataclass schema, strict YAML loading, dotted overrides."""

from qualiface.config.io import ConfigError, config_from_dict, dump_config, from_dict, load_config, to_dict
from qualiface.config.schema import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    HeadConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    PairsSource,
    ScheduleConfig,
    SyntheticConfig,
    TrainConfig,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "HeadConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "PairsSource",
    "ScheduleConfig",
    "SyntheticConfig",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "from_dict",
    "load_config",
    "to_dict",
]

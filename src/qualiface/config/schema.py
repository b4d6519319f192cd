"""The typed schema of a training experiment: one dataclass per section, every field with a default.

A YAML file sets any subset of these fields (``qualiface.config.load_config``); unknown keys are errors.
Defaults follow arcface_torch's recipe (SGD 0.1, momentum 0.9, weight decay 5e-4, polynomial decay, clip 5 on
the backbone) on the built-in synthetic data; the recipes of the other methods are in ``configs/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16", "fp16", "fp16-cuda", "fp32-cuda"]


@dataclass
class ModelConfig:
    """The backbone.

    Attributes:
        backbone: registered name (``qualiface.list_backbones()``).
        kwargs: passed to ``create_backbone`` (e.g. ``quality_branch: cr_fiqa``, ``dropout: 0.4``).
        init_from: a qualiface run directory, checkpoint folder or ``model.pt`` whose backbone (and class
            centres, when the class count matches) start the run, e.g. ScaleFace fine-tuning.
        freeze_backbone: train only the quality branch and the head (the backbone stays in eval mode).
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
    """

    backbone: str = "mobilefacenet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    freeze_backbone: bool = False
    sync_batchnorm: bool = False


@dataclass
class HeadConfig:
    """The margin head.

    Attributes:
        name: registered name (``qualiface.list_heads()``).
        sample_rate: Partial FC rate of class centres per step (positives always kept).
        kwargs: passed to ``create_head`` (e.g. ``margin: 0.5``).
        freeze_centres: keep the class centres as ``model.init_from`` gives them; a run whose ``init_from`` has no
            centres for this class count is refused. ``None`` (default): frozen when the run fine-tunes a frozen
            backbone from ``init_from`` (``model.freeze_backbone``), as ScaleFace's official fine-tune does.
    """

    name: str = "arcface"
    sample_rate: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_centres: bool | None = None


@dataclass
class SyntheticConfig:
    """The built-in synthetic identities (``qualiface.data.synthetic.SyntheticFaces``)."""

    num_identities: int = 64
    images_per_identity: int = 16
    size: int = 112
    seed: int = 0
    degradations: list[str] = field(default_factory=lambda: ["blur", "noise", "lowres", "occlusion", "illumination"])
    severity_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    clean_fraction: float = 0.3


@dataclass
class DataConfig:
    """Training data.

    Attributes:
        source: ``synthetic`` (built in), ``recordio`` (``path`` = ``train.rec``), ``image_folder`` (``path`` =
            one folder per identity) or ``csv`` (``path`` = a ``path,label`` list, ``root`` its image folder).
        num_classes: the class count; ``None`` takes it from the data.
        batch_size: images per process and step (the global batch is ``batch_size × world_size``).
        num_workers: DataLoader worker processes per rank.
        augment: ``none``, ``flip`` (arcface_torch) or ``adaface`` (crop, low resolution, jitter, flip).
        augment_p: probability of each AdaFace augmentation.
        on_error: ``raise`` on an unreadable image, or ``skip`` it (counted and reported).
    """

    source: Literal["synthetic", "recordio", "image_folder", "csv"] = "synthetic"
    path: str | None = None
    root: str | None = None
    num_classes: int | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    batch_size: int = 64
    num_workers: int = 2
    augment: Literal["none", "flip", "adaface"] = "flip"
    augment_p: float = 0.2
    on_error: Literal["raise", "skip"] = "raise"


@dataclass
class OptimConfig:
    """Optimizer.

    Attributes:
        name: ``sgd`` or ``adamw``.
        lr: base learning rate (not rescaled by the batch, as arcface_torch).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        betas: AdamW betas.
        weight_decay: decay of the backbone and the head.
        no_decay: parameters without decay: ``none`` (arcface_torch, MagFace, CR-FIQA, UniTSFace), ``norm``
            (normalisation layers, AdaFace) or ``norm_bias`` (normalisation layers and every bias).
        head_lr: learning rate of the head (class centres), ``None`` = ``lr``.
        head_weight_decay: decay of the head, ``None`` = ``weight_decay``.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    no_decay: Literal["none", "norm", "norm_bias"] = "none"
    head_lr: float | None = None
    head_weight_decay: float | None = None


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped every iteration.

    Attributes:
        name: ``poly`` (arcface_torch ``PolynomialLRWarmup``; UniTSFace large-scale uses power 2), ``step``
            (× ``gamma`` at each milestone epoch: MagFace, AdaFace, CR-FIQA, ScaleFace, UniTSFace CASIA),
            ``cosine`` or ``constant``.
        warmup_epochs: linear warm-up from 0, in epochs (may be fractional); added to ``warmup_steps``.
        warmup_steps: linear warm-up, in steps.
        power: polynomial power.
        milestones: epochs (may be fractional) where ``step`` multiplies the lr by ``gamma``.
        gamma: the step factor.
        min_lr_ratio: the cosine schedule's floor as a fraction of the base lr.
    """

    name: Literal["poly", "step", "cosine", "constant"] = "poly"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    power: float = 1.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """The loop.

    Attributes:
        out_dir: the run directory (config, logs, checkpoints, exported model).
        epochs: training length in epochs; ``steps`` wins when both are set.
        steps: training length in optimizer steps.
        precision: ``auto`` (bf16 autocast where the GPU runs bf16, the CPU has AMX-BF16, or the CPU has
            AVX512-BF16 and a short matmul measurement finds bf16 1.5x faster than fp32; else fp32), ``fp32``,
            ``bf16``, ``fp16`` (CUDA only, with a GradScaler), or ``fp16-cuda`` / ``fp32-cuda`` (the recipes: the
            official run's fp16 with a GradScaler, or fp32, on CUDA, and ``auto`` elsewhere). The heads always
            compute in float32; ``qualiface train`` prints what the setting resolved to.
        channels_last: NHWC activations; ``None`` = on for CPU training (oneDNN: 13-25% faster in fp32 on
            iresnet50 / mobilefacenet, BENCHMARKS.md) and under autocast on GPUs.
        compile: ``torch.compile`` the backbone.
        grad_clip: max global L2 norm of the gradient of the parameters ``grad_clip_over`` names; ``None`` = no
            clipping.
        grad_clip_over: the parameters whose joint gradient norm ``grad_clip`` bounds: ``backbone`` (the backbone
            and its quality branch; the class centres are not clipped: arcface_torch, CR-FIQA, ScaleFace) or
            ``all`` (the backbone and every trainable head parameter, class centres and UniTSFace's ``b``
            included, one global norm over every rank's shard: UniTSFace's ``train.py``).
        grad_accumulation: micro-batches whose gradients are summed into one optimizer step (arcface_torch's
            ``gradient_acc``): the optimizer (with clipping, the GradScaler update) steps after every
            ``grad_accumulation``-th batch, while steps, epochs, warm-up, the schedule, logging and checkpoints
            count batches, as arcface_torch's ``global_step``. ``checkpoint_every`` must be a multiple, so that a
            checkpoint never holds a half-accumulated gradient.
        seed: seed of initialisation, data order, augmentation and class sampling.
        log_every: steps between log rows.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_checkpoints: how many checkpoints to keep (older ones are deleted once a newer one is complete).
        backend: ``auto`` (NCCL on CUDA, gloo on CPU), ``gloo`` or ``nccl``.
        device: ``auto`` (the local CUDA device under torchrun when present, else CPU), ``cpu`` or ``cuda``.
        deterministic: ``torch.use_deterministic_algorithms(True)``.
        ddp_timeout: minutes a collective waits for the other processes before the run fails (a rank that died
            or hangs stops the others after this long). Rank 0 evaluates alone while the others wait at a
            barrier, so raise it when one evaluation (``eval.sets``) takes longer.
    """

    out_dir: str = "runs/train"
    epochs: float | None = 1.0
    steps: int | None = None
    precision: Precision = "auto"
    channels_last: bool | None = None
    compile: bool = False
    grad_clip: float | None = 5.0
    grad_clip_over: Literal["backbone", "all"] = "backbone"
    grad_accumulation: int = 1
    seed: int = 2048
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = False
    ddp_timeout: float = 10.0


@dataclass
class PairsSource:
    """One verification set: a ``.bin`` pack (``path``), a pairs CSV (``path`` + image ``root``), or
    ``synthetic`` held-out identities (``num_pairs`` pairs)."""

    name: str = ""
    kind: Literal["bin", "pairs", "synthetic"] = "synthetic"
    path: str | None = None
    root: str | None = None
    num_pairs: int = 600


@dataclass
class EvalConfig:
    """Verification during training (insightface 10-fold accuracy).

    Attributes:
        every: steps between evaluations (``0``: only at the end); always at the end when ``sets`` is not empty.
        sets: the verification sets.
        batch_size: images per forward pass.
        flip: add the horizontally flipped image's embedding (arcface_torch's fusion).
    """

    every: int = 0
    sets: list[PairsSource] = field(default_factory=list)
    batch_size: int = 128
    flip: bool = True


@dataclass
class LogConfig:
    """Outputs: ``metrics.csv`` always; TensorBoard event files when ``tensorboard`` is on."""

    tensorboard: bool = False
    progress: bool = True


@dataclass
class ExperimentConfig:
    """A whole experiment; ``name`` is free text recorded with the run."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

"""``train(cfg)``: one process or many under torchrun, with the same config and the same result.

Per step: the backbone runs under autocast (when configured), the head computes its loss in float32 over the
global batch (under DDP its class centres are sharded over the ranks and it all-gathers the embeddings), the
backbone gradient is summed over ranks, clipped, and the optimizer and the per-iteration schedule step. A
non-finite loss stops the run before the update, and the last complete checkpoint is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import qualiface
from qualiface.backbones.base import Backbone
from qualiface.config.io import dump_config, to_dict
from qualiface.config.schema import ExperimentConfig
from qualiface.errors import InputError, RunError
from qualiface.heads.base import Head
from qualiface.models.card import ThresholdInfo
from qualiface.models.face_model import FaceModel
from qualiface.models.model_file import write_model_file
from qualiface.quality.branches import branch_for_aux_key, branch_modules, get_branch
from qualiface.run_layout import RunLayout
from qualiface.train import checkpoint as ckpt
from qualiface.train.callbacks import Callback, LoopState, loop_callbacks
from qualiface.train.clipping import clip_gradients, clip_set
from qualiface.train.data import ShardedBatchSampler, build_train_samples, make_loader
from qualiface.train.distributed import (
    DistInfo,
    any_rank,
    barrier,
    cleanup_distributed,
    setup_distributed,
    sum_gradients_hook,
)
from qualiface.train.evaluation import VerificationSet, build_verification_set, evaluate_sets
from qualiface.train.init_from import gather_centres, read_init_source
from qualiface.train.metrics_log import MetricsLog
from qualiface.train.optim import build_optimizer, build_scheduler, total_steps
from qualiface.train.precision import grad_scaler, resolve
from qualiface.train.resume import read_resumes, resume_run

logger = logging.getLogger(__name__)


class NonFiniteLossError(RunError):
    """The loss became NaN or infinite; the run stopped before applying that step."""


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    step: int
    total_steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    model_path: Path | None = None
    checkpoint: Path | None = None
    skipped: dict[str, Any] = field(default_factory=dict)
    precision: str = ""


class _AuxForward(nn.Module):
    """``forward = backbone.forward_aux``, so that DDP sees the quality branch as part of the forward pass."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.backbone.forward_aux(images)


def _aux_keys(backbone: nn.Module) -> set[str]:
    """The ``forward_aux`` keywords of the backbone's quality branch (none without one)."""
    name = getattr(backbone, "quality_branch", None)
    return {get_branch(name).aux_key} if name else set()


class Trainer:
    """The state of one run on one rank; :func:`train` is the entry point."""

    def __init__(self, cfg: ExperimentConfig, info: DistInfo, *, resume: bool = False, overwrite: bool = False) -> None:
        self.cfg = cfg
        self.info = info
        self.device = info.device
        self.run_dir = Path(cfg.train.out_dir)
        self.layout = RunLayout(self.run_dir)
        self._claim_run_dir(resume, overwrite)  # every rank: the same view of the folder, the same error
        if info.is_main:
            if overwrite and not resume:
                removed = self.layout.remove_run_files()
                if removed:
                    logger.warning("--overwrite: removed the previous run's %s", ", ".join(p.name for p in removed))
            for stale in self.layout.stale_files():  # left by a killed run: never read, removed
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
                logger.info("removed %s (left by an interrupted run)", stale)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(info)
        torch.manual_seed(cfg.train.seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)

        self.samples = build_train_samples(cfg.data, self._preprocessing_probe(), cfg.train.seed)
        self.num_classes = self.samples.source.num_classes
        self.sampler = ShardedBatchSampler(
            len(self.samples), cfg.data.batch_size, info.world_size, info.rank, cfg.train.seed
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = total_steps(cfg.train.steps, cfg.train.epochs, self.steps_per_epoch)

        torch.manual_seed(cfg.train.seed)
        self.backbone = qualiface.create_backbone(cfg.model.backbone, **cfg.model.kwargs)
        self.head = self._build_head()
        init_centres_blockwise(self.head, cfg.train.seed)
        self._check_aux()
        self.freeze_centres = (
            cfg.head.freeze_centres
            if cfg.head.freeze_centres is not None
            else bool(cfg.model.freeze_backbone and cfg.model.init_from)
        )
        if self.freeze_centres and not cfg.model.init_from:
            raise ValueError("head.freeze_centres needs model.init_from: frozen centres must come from a trained run")
        if cfg.model.init_from:
            self._init_from(Path(cfg.model.init_from))
        self.backbone.to(self.device)
        self.head.to(self.device)
        self.precision = resolve(cfg.train.precision, self.device)
        self.autocast_dtype = self.precision.dtype
        self.channels_last = (
            cfg.train.channels_last
            if cfg.train.channels_last is not None
            else self.device.type == "cpu" or self.autocast_dtype is not None
        )
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
        if info.is_main:
            logger.info("precision: %s (%s)", self.precision_label, self.precision.reason)
        if cfg.model.freeze_backbone:
            for name, param in self.backbone.named_parameters():
                param.requires_grad_(name.split(".")[0] in branch_modules())
        if cfg.model.sync_batchnorm and info.distributed:
            if self.device.type != "cuda":
                raise ValueError("model.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel)")
            self.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(self.backbone)
        self.model: nn.Module = _AuxForward(self.backbone)
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            with warnings.catch_warnings():
                # torch 2.13 deprecates broadcast_buffers for forward_sync_buffers, which still syncs the buffers at
                # init: each rank's BatchNorm statistics are its own (arcface_torch) and a resume restores them, so
                # the deprecated flag stays until torch offers init_sync_buffers (its warning says as much)
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                self.model = DistributedDataParallel(
                    self.model,
                    device_ids=[self.device] if self.device.type == "cuda" else None,
                    broadcast_buffers=False,
                    find_unused_parameters=False,
                )
            self.model.register_comm_hook(None, sum_gradients_hook)
        if cfg.train.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]

        self.optimizer = build_optimizer(cfg.optim, self.backbone, self.head)
        self.scaler = grad_scaler(self.autocast_dtype, self.device)
        self.clip = clip_set(cfg.train.grad_clip_over, self.backbone, self.head)  # train.grad_clip_over
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR
        self.resumes: list[dict[str, Any]] = []
        if resume:  # the checkpoint, with the config's changes applied or refused; the schedule at its step
            self.resumes = [*(read_resumes(self.layout.run_json) if info.is_main else []), resume_run(self)]
        else:
            self.scheduler = build_scheduler(cfg.schedule, self.optimizer, self.total_steps, self.steps_per_epoch)
        self.sampler.start_step = self.step
        if self.step % cfg.train.grad_accumulation:  # only the final checkpoint of a run can fall there
            logger.warning(
                "resumed at step %d, inside an accumulation of train.grad_accumulation=%d batches: the gradient of"
                " the batches before it was not saved, so the next optimizer step sums only the remaining ones",
                self.step,
                cfg.train.grad_accumulation,
            )
        self.eval_sets: list[VerificationSet] = []
        if info.is_main:
            image_size = self.backbone.preprocessing.input_size[1]
            self.eval_sets = [build_verification_set(s, cfg.data.synthetic, image_size) for s in cfg.eval.sets]
        self.log = (
            MetricsLog(self.run_dir, tensorboard=cfg.log.tensorboard, resume_step=self.step) if info.is_main else None
        )
        if info.is_main:
            dump_config(cfg, self.layout.config)
            self.layout.run_json.write_text(json.dumps(self.describe(), indent=2) + "\n")

    # ------------------------------------------------------------------------------------------------ set-up

    def _claim_run_dir(self, resume: bool, overwrite: bool) -> None:
        """A new run never writes into another run's files: refused unless ``resume`` or ``overwrite``."""
        if resume and overwrite:
            raise ValueError("--resume continues the run in train.out_dir and --overwrite replaces it: choose one")
        existing = self.layout.run_files()
        if existing and not (resume or overwrite):
            names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in existing)
            raise ValueError(
                f"{self.run_dir}: holds a run already ({names}); continue it with --resume, choose another "
                f"train.out_dir (--out), or replace it with --overwrite"
            )

    def _preprocessing_probe(self) -> Any:
        """The backbone's preprocessing without building it twice at full size (it is a class attribute of the
        description, cheap to build on the meta device)."""
        with torch.device("meta"):
            probe = qualiface.create_backbone(self.cfg.model.backbone, **self.cfg.model.kwargs)
        return probe.preprocessing

    def _build_head(self) -> Head:
        cfg = self.cfg
        kwargs: dict[str, Any] = dict(cfg.head.kwargs)
        kwargs.setdefault("sample_rate", cfg.head.sample_rate)
        if self.info.distributed:
            from qualiface.heads.sharding import ShardSpec

            kwargs["shard"] = ShardSpec(self.info.rank, self.info.world_size)
        # the value checks of the head read tensors on the host at every step; here labels are checked where
        # they are read (TrainSamples) and a non-finite loss stops the run (train_step), saying which input was bad
        kwargs.setdefault("validate_inputs", False)
        return qualiface.create_head(
            cfg.head.name, embedding_dim=self.backbone.embedding_dim, num_classes=self.num_classes, **kwargs
        )

    def _check_aux(self) -> None:
        provided = _aux_keys(self.backbone)
        head = self.head
        needed = set(head.requires)
        usable = needed | set(head.accepts)
        missing = needed - provided
        if missing:
            branch = branch_for_aux_key(sorted(missing)[0])
            fix = f"set model.kwargs.quality_branch: {branch.name}" if branch else "no quality branch provides it"
            raise ValueError(f"head {self.cfg.head.name!r} needs the backbone output {sorted(missing)}: {fix}")
        unused = provided - usable
        if unused:
            raise ValueError(
                f"the backbone's quality branch ({self.backbone.quality_branch}) outputs {sorted(unused)}, which head "
                f"{self.cfg.head.name!r} does not use; remove model.kwargs.quality_branch or pick a head that uses it"
            )
        self.aux_keys = provided

    def _init_from(self, path: Path) -> None:
        """Backbone and class centres from a previous run (any number of processes): a ``model.pt`` holds the
        gathered centres, a checkpoint folder one shard per rank. Logs what was loaded; with
        frozen centres (``head.freeze_centres``) a source without centres for this class count is refused."""
        backbone_state, centres, source = read_init_source(path)
        try:
            missing, unexpected = self.backbone.load_state_dict(backbone_state, strict=False)
        except RuntimeError as exc:  # shapes that differ: PyTorch lists every one over many lines
            first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
            raise InputError(
                f"model.init_from {path}: the weights do not fit {self.cfg.model.backbone} "
                f"({first.rstrip('.')}); init from a run of the same backbone and model.kwargs"
            ) from None
        if unexpected or [k for k in missing if k.split(".")[0] not in branch_modules()]:
            raise ValueError(
                f"model.init_from {path}: backbone keys do not match {self.cfg.model.backbone}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        logger.info("init_from %s: backbone loaded (%d tensors)", source, len(backbone_state))
        usable = centres is not None and tuple(centres.shape) == (self.num_classes, self.head.weight.shape[1])
        if usable:
            assert centres is not None
            start = int(getattr(self.head, "class_start", 0))
            with torch.no_grad():
                self.head.weight.copy_(centres[start : start + self.head.weight.shape[0]])
            logger.info("init_from %s: %d class centres loaded", source, centres.shape[0])
        else:
            what = "no class centres" if centres is None else f"class centres of shape {tuple(centres.shape)}"
            needed = (self.num_classes, self.head.weight.shape[1])
            if self.freeze_centres:
                raise ValueError(
                    f"model.init_from {path}: {what}, but head.freeze_centres needs the trained centres {needed}; "
                    f"point init_from at the run that trained them"
                )
            logger.warning("init_from %s: %s for %s; the head starts from its own initialisation", source, what, needed)
        if self.freeze_centres:
            self.head.weight.requires_grad_(False)

    def describe(self) -> dict[str, Any]:
        return {
            "qualiface_version": qualiface.__version__,
            "torch_version": torch.__version__,
            "world_size": self.info.world_size,
            "device": str(self.device),
            "num_classes": self.num_classes,
            "num_samples": len(self.samples),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "global_batch": self.cfg.data.batch_size * self.info.world_size,
            "autocast": str(self.autocast_dtype) if self.autocast_dtype is not None else "float32",
            "channels_last": self.channels_last,
            "precision": self.precision_label,
            "precision_reason": self.precision.reason,
            "resumes": self.resumes,
        }

    @property
    def precision_label(self) -> str:
        """What the backbone runs in, e.g. ``"bf16 + channels_last"``, ``"fp32"``."""
        return self.precision.name + (" + channels_last" if self.channels_last else "")

    # ------------------------------------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(),
            "config": to_dict(self.cfg),
            "world_size": self.info.world_size,
            "rank": self.info.rank,
            "qualiface_version": qualiface.__version__,
        }

    def save(self) -> Path:
        """Checkpoint this step (collective); refused, on every rank, when any rank's weights are not finite, so
        the checkpoint named after a stop is always a usable one."""
        bad = self._non_finite_tensor()
        if any_rank(bad is not None, self.info):
            where = f"{bad} is not finite" if bad else "another rank's weights are not finite"
            last = self.last_checkpoint
            raise NonFiniteLossError(
                f"step {self.step}: {where}; not checkpointed, "
                + (f"the last good checkpoint is {last}" if last else "no checkpoint was written yet")
                + ". Lower optim.lr, raise schedule.warmup_steps or set train.grad_clip, then continue with --resume."
            )
        try:
            self.last_checkpoint = ckpt.save_checkpoint(
                self.run_dir, self.step, self.state(), self.info, self.cfg.train.keep_checkpoints
            )
        except OSError as exc:  # a full disk, a vanished mount: the partial folder is removed by the next run
            last = self.last_checkpoint
            raise ckpt.CheckpointError(
                f"step {self.step}: the checkpoint could not be written ({exc.filename or self.run_dir}: "
                f"{exc.strerror or exc}); "
                + (f"the last complete checkpoint is {last}" if last else "no checkpoint was written yet")
                + "; free the space, then continue with --resume"
            ) from None
        return self.last_checkpoint

    def _non_finite_tensor(self) -> str | None:
        """The name of the first parameter or buffer of the backbone or head that holds NaN or Inf, else ``None``
        (one host read for the whole model)."""
        named = [
            *(("backbone." + k, v) for k, v in self.backbone.state_dict().items()),
            *(("head." + k, v) for k, v in self.head.state_dict().items()),
        ]
        floats = [(k, v) for k, v in named if v.is_floating_point() and v.numel()]
        flags = torch.stack([torch.isfinite(v).all() for _, v in floats]) if floats else torch.ones(0, dtype=torch.bool)
        if bool(flags.all()):
            return None
        return floats[int((~flags).nonzero()[0])][0]

    def export(self) -> Path | None:
        """``run_dir/model.pt`` (rank 0): backbone weights, model card, and every class centre (gathered from the
        ranks of a multi-process run). Collective: every rank calls it."""
        centres = gather_centres(self.head, self.info)
        if not self.info.is_main:
            return None
        head_info: dict[str, Any] = {"name": self.cfg.head.name, "num_classes": self.num_classes}
        threshold = getattr(self.head, "threshold", None)
        if isinstance(threshold, Tensor):
            head_info["threshold"] = float(threshold)
        card = FaceModel.from_backbone(
            self.backbone,
            name=f"{self.cfg.model.backbone} ({self.cfg.name or self.run_dir.name}, step {self.step})",
            head=self.cfg.head.name,
        ).card
        card = replace(
            card,
            preprocessing=replace(card.preprocessing, source="qualiface training"),
            architecture_kwargs=dict(self.cfg.model.kwargs),
            provenance={
                "trained_by": f"qualiface {qualiface.__version__}",
                "run": str(self.run_dir),
                "step": self.step,
                "head": self.cfg.head.name,
                "data": self.cfg.data.source
                if self.cfg.data.path is None
                else f"{self.cfg.data.source}: {self.cfg.data.path}",
                "num_classes": self.num_classes,
            },
        )
        if "threshold" in head_info:
            value = head_info["threshold"]
            if math.isfinite(value) and -1.0 <= value <= 1.0:
                card = card.with_threshold(ThresholdInfo(value, kind="learned", source=f"{self.cfg.head.name} head"))
            else:  # not a cosine: kept out of the card and the file (a decision with it would be meaningless)
                logger.warning("the learned threshold %s is not within [-1, 1]; model.pt records none", value)
                del head_info["threshold"]
        return write_model_file(
            self.layout.model_file,
            backbone=self.cfg.model.backbone,
            backbone_kwargs=self.cfg.model.kwargs,
            state_dict=self.backbone.state_dict(),
            preprocessing=self.backbone.preprocessing.to_dict(),
            embedding_dim=self.backbone.embedding_dim,
            card=card.to_dict(),
            head=head_info,
            head_state={"weight": centres},
            step=self.step,
            config=to_dict(self.cfg),
            version=qualiface.__version__,
        )

    # ------------------------------------------------------------------------------------------------ the loop

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """One batch: forward, backward and (every ``train.grad_accumulation``-th batch) the optimizer step; returns
        the (detached) loss, the head's logs and the clipped set's gradient norm (``None`` on a batch that only
        accumulates, or without clipping)."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            embeddings, aux = self.model(images)
        head_aux = {k: aux[k] for k in self.aux_keys}
        out = self.head(embeddings, labels, **head_aux)
        loss = out.loss
        if not bool(torch.isfinite(loss.detach())):  # the step's one host synchronisation
            if not bool(torch.isfinite(embeddings).all()):  # a non-finite embedding makes the loss non-finite
                self._stop("the backbone output contains NaN or Inf")
            problem = self.head.input_problem(
                embeddings.detach(), labels, **{k: v.detach() for k, v in head_aux.items()}
            )
            self._stop(problem or f"the loss is {loss.item()}")
        accumulation = self.cfg.train.grad_accumulation
        if self.step % accumulation == 0:  # the first batch of an optimizer step
            self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        grad_norm = None
        if (self.step + 1) % accumulation == 0:  # the last: clip the summed gradient and step
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = clip_gradients(self.clip, self.cfg.train.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.backbone.after_optimizer_step()
        with warnings.catch_warnings():
            # a GradScaler skips the optimizer step on inf/NaN gradients (fp16's first steps), and with
            # grad_accumulation the optimizer steps every k-th batch; the schedule advances with every batch (as
            # arcface_torch's), so torch's "scheduler before optimizer" warning is expected
            warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
            self.scheduler.step()
        self.step += 1
        return loss.detach(), out.logs, grad_norm

    def _stop(self, what: str) -> None:
        last = self.last_checkpoint
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"step {self.step + 1}: {what} (head {self.cfg.head.name}, lr {self.optimizer.param_groups[0]['lr']:.4g}); "
            f"stopped before the update, {where}. Lower optim.lr, raise schedule.warmup_steps or set "
            f"train.grad_clip, then continue with --resume."
        )

    def _loader(self) -> DataLoader:
        return make_loader(self.samples, self.sampler, self.cfg.data.num_workers, self.device.type == "cuda")

    def evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.info.is_main and self.eval_sets:
            metrics = evaluate_sets(
                self.backbone,
                self.eval_sets,
                self.cfg.eval,
                self.device,
                autocast_dtype=self.autocast_dtype,
                channels_last=self.channels_last,
            )
            logger.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        barrier(self.info)
        return metrics

    def _set_train_mode(self) -> None:
        """Training mode, except a frozen backbone, which stays in eval mode but for its quality branch."""
        if self.cfg.model.freeze_backbone:
            self.backbone.eval()
            for name in branch_modules():
                branch = getattr(self.backbone, name, None)
                if branch is not None:
                    branch.train()
        else:
            self.backbone.train()
        self.head.train()

    def run(self, callbacks: Sequence[Callback] = ()) -> TrainResult:
        """Train to ``total_steps``; after each step, and at the end, the bookkeeping of :mod:`.callbacks` runs in
        its order (logs, evaluation, checkpoints, ``callbacks``, the final checkpoint, evaluation and export)."""
        result = TrainResult(self.run_dir, self.step, self.total_steps, precision=self.precision_label)
        state = LoopState(self, result)
        hooks = loop_callbacks(self, callbacks)
        self._set_train_mode()
        try:
            if self.step < self.total_steps:
                for batch in self._loader():
                    lr = self.optimizer.param_groups[0]["lr"]
                    state.begin_step(lr, *self.train_step(batch.images, batch.labels), skipped=batch.skipped)
                    for hook in hooks:
                        hook.on_step_end(state)
                    if self.step >= self.total_steps:
                        break
            for hook in hooks:
                hook.on_train_end(state)
        finally:
            for hook in hooks:
                hook.close()
        state.result.step = self.step
        return state.result


def init_centres_blockwise(head: Head, seed: int, block: int = 65_536) -> None:
    """Initialise ``head.weight`` (this rank's rows ``[class_start, class_start + rows)``) with the head's own
    initialisation, drawn per block of ``block`` global classes from a generator seeded by ``(seed, block)``:
    the centres are the same whatever the number of ranks, so a torchrun job starts where one process would."""
    from qualiface.train.data import mix_seed

    weight = head.weight
    start, rows = int(getattr(head, "class_start", 0)), weight.shape[0]
    total = int(head.num_classes)
    with torch.no_grad():
        for b in range(start // block, (start + rows - 1) // block + 1):
            low, high = b * block, min((b + 1) * block, total)
            values = torch.empty(high - low, weight.shape[1], dtype=weight.dtype)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix_seed(seed, 7, b))
                head.init_centres_(values)
            first, last = max(low, start), min(high, start + rows)
            weight[first - start : last - start].copy_(values[first - low : last - low])


def train(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    info: DistInfo | None = None,
) -> TrainResult:
    """Train as ``cfg`` says, in this process or as one rank of a torchrun job; see the module docstring.

    Args:
        cfg: the experiment.
        resume: continue from the newest complete checkpoint in ``cfg.train.out_dir``.
        overwrite: replace a previous run in ``cfg.train.out_dir`` (its model, checkpoints, metrics, config,
            TensorBoard events and calibration; nothing else in the folder). Without it, or ``resume``, a folder
            that holds a run is refused.
        callbacks: called as ``callback(trainer, step, logged_row)`` after every step.
        info: an existing process set-up (tests); default: :func:`setup_distributed` from the environment.
    """
    own = info is None
    info = info or setup_distributed(cfg.train.backend, cfg.train.device, cfg.train.ddp_timeout)
    try:
        trainer = Trainer(cfg, info, resume=resume, overwrite=overwrite)
        return trainer.run(callbacks)
    finally:
        if own:
            cleanup_distributed(info)

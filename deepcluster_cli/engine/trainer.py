"""The one training loop every method shares.

A method describes what to train as one or more :class:`Stage` objects (a loss over a
minibatch, which parameters, the optimiser settings, optional hooks); :class:`Trainer` owns the
loop. The whole training set is one tensor on the device; a batch is an index slice of a
random permutation, so there is no per-sample Python work. Loss parts are accumulated as
tensors and read once per epoch (one host sync per epoch, not per step).

On a CUDA GPU a stage marked ``graph=True`` captures its step (gather, forward, backward, Adam)
once as a CUDA graph and replays it for every full batch: PyTorch then launches no kernel from
Python, and the small networks of deep clustering spend most of an eager step doing that
(docs/scaling.md). ``DEEPCLUSTER_CUDA_GRAPHS=0`` keeps every step eager.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deepcluster_cli.engine import distributed
from deepcluster_cli.engine.progress import Progress
from deepcluster_cli.errors import TrainingError, UsageError

LossFn = Callable[[Tensor, Tensor], dict[str, Tensor]]
"""``loss(batch_rows, batch_index) -> {"loss": total, "part": value, ...}``."""


@dataclass
class Stage:
    """One phase of training: what to minimise, over which parameters, and how."""

    name: str
    loss: LossFn
    params: Iterable[nn.Parameter] | list[dict]
    epochs: int
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    nesterov: bool = False  # SGD only, and only with momentum > 0 (torch's rule)
    weight_decay: float = 0.0
    lr_decay_every: int = 0  # epochs; 0 = constant learning rate
    lr_decay: float = 1.0
    lr_min: float = 0.0
    # linear learning-rate warm-up: step t of the stage (counted from its first epoch) runs
    # at lr * min(1, (t + 1) / (warmup_epochs * steps per epoch)); 0 = none. The rates held
    # by the optimiser (and saved in a resumable state) stay the full ones.
    warmup_epochs: float = 0.0
    shuffle: bool = True
    drop_last: bool = False
    # Rows of a batch from its indices (default: ``data[idx]``); DGG gathers neighbours here.
    batch_rows: Callable[[Tensor], Tensor] | None = None
    on_epoch_start: Callable[[int], None] | None = None  # called with the 0-based epoch
    after_step: Callable[[Tensor, Tensor], None] | None = None  # (rows, idx), under no_grad
    before_step: Callable[[Tensor, Tensor], None] | None = None  # (rows, idx), under no_grad
    # One more epoch after the last, averaging every parameter of ``average`` over its
    # iterations (AE-CM's averaging epoch); the averages replace the parameters.
    average: nn.Module | None = None
    # How the loss reduces over the batch rows: "mean" (most methods) or "sum" (AE-CM's
    # terms). Under torchrun the ranks' gradients are then weighted by their share of the
    # global batch, or simply added. ``batch_terms`` names parts of a "sum" loss that are not
    # sums over rows (a penalty on the centroids, a term of the batch mean): each rank scales
    # them by its share so the global batch counts them once. One process: no effect.
    reduction: str = "mean"
    batch_terms: tuple[str, ...] = ()
    # The step may be captured as a CUDA graph (see the module docstring): the loss reads only
    # tensors that stay the same objects for the whole stage (the parameters, the data) and
    # never branches in Python on a tensor's value. Used on a CUDA device, with Adam/AdamW, a
    # constant learning rate and none of the hooks above; otherwise the stage runs eagerly.
    graph: bool = False
    extra: dict = field(default_factory=dict)


def make_optimizer(params, stage: Stage, *, capturable: bool = False) -> torch.optim.Optimizer:
    """The stage's optimiser; ``capturable``: Adam's step count kept on the device, so that
    its step can run inside a CUDA graph (same arithmetic)."""
    params = list(params)
    if stage.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if stage.optimizer == "adam" else torch.optim.AdamW
        kw = dict(lr=stage.lr, betas=stage.betas, eps=stage.eps, weight_decay=stage.weight_decay)
        if capturable:
            kw["capturable"] = True
        try:
            # fused Adam is one kernel per parameter group: ~25% faster per step on CPU here
            opt = cls(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            opt = cls(params, **kw)
        # its eager steps (warm-up, a last smaller batch) are expected: no warning about them
        opt._warned_capturable_if_run_uncaptured = True
        return opt
    if stage.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=stage.lr,
            momentum=stage.momentum,
            nesterov=stage.nesterov and stage.momentum > 0,
            weight_decay=stage.weight_decay,
        )
    raise UsageError(f"unknown optimizer {stage.optimizer!r}; choose adam, adamw or sgd")


@dataclass
class RunControl:
    """Shared with whoever may stop training: a signal handler sets ``stop_signal`` (the loop
    stops after the current step); ``deadline`` is a ``time.monotonic()`` value after which the
    loop stops at the end of an epoch (``--max-time``)."""

    stop_signal: int | None = None
    deadline: float | None = None
    # True while a training loop runs and checks ``stop_signal`` after every step; outside it
    # (k-means, a GMM fit, preparing the next stage) nothing would, so the signal handler
    # stops at once with ``resumable()``: the finished stages (set by the Trainer)
    polling: bool = False
    resumable: Callable[[], dict] | None = None


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict, *, capturable: bool) -> None:
    """``opt.load_state_dict(saved)``, keeping this run's ``capturable``: a state saved by a run
    without CUDA graphs (on the CPU, or with them off) would otherwise turn it off, and the
    capture would fail; PyTorch then places Adam's step counts by the setting."""
    groups = saved.get("param_groups", [])
    if any("capturable" in g for g in groups):
        saved = {**saved, "param_groups": [{**g, "capturable": capturable} for g in groups]}
    opt.load_state_dict(saved)


def graphs_enabled() -> bool:
    """``DEEPCLUSTER_CUDA_GRAPHS=0`` (or ``off``, ``false``, ``no``) keeps every step eager."""
    return os.environ.get("DEEPCLUSTER_CUDA_GRAPHS", "1").strip().lower() not in (
        "0",
        "off",
        "false",
        "no",
    )


def graph_eligible(stage: Stage, device: torch.device) -> bool:
    """Whether ``stage`` runs its full batches as a replayed CUDA graph on ``device``."""
    return (
        stage.graph
        and device.type == "cuda"
        and graphs_enabled()
        and not distributed.world().active
        and stage.optimizer in ("adam", "adamw")
        and not stage.lr_decay_every
        and not stage.warmup_epochs
        and stage.batch_rows is None
        and stage.on_epoch_start is None
        and stage.before_step is None
        and stage.after_step is None
        and stage.average is None
    )


class GraphStep:
    """A stage's training step captured as one CUDA graph, replayed for every full batch.

    The first ``WARMUP`` full batches run eagerly on a side stream (PyTorch asks for this
    before a capture: lazy initialisations must not land in the graph); the next one is
    captured and then replayed, and so is every later full batch, each after its indices are
    copied into the graph's input. The loss parts accumulate inside the graph into its own
    tensors (``take_sums`` reads and clears them). Gradients live in the graph's memory and
    are overwritten by each replay, so no ``zero_grad`` is needed between replays; an eager
    step in between (an epoch's last, smaller batch) makes its own, so a parameter's ``.grad``
    is not the graph's after the stage.
    """

    WARMUP = 3

    def __init__(self, trainer: Trainer, stage: Stage, opt: torch.optim.Optimizer, batch: int):
        self.trainer, self.stage, self.opt, self.batch = trainer, stage, opt, batch
        self.idx = torch.empty(batch, dtype=torch.long, device=trainer.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side: torch.cuda.Stream | None = None
        self.sums: dict[str, Tensor] = {}
        self.warm = 0
        self.replays = 0  # steps this graph ran (tests, logs)

    def step(
        self, idx: Tensor, eager: Callable[[Tensor], dict[str, Tensor]]
    ) -> dict[str, Tensor] | None:
        """One step on the full batch ``idx``. During the warm-up ``eager(idx)`` (the
        trainer's eager step) runs it and its loss parts are returned for the trainer to
        accumulate; afterwards the graph runs it, accumulates the parts itself and None is
        returned. If the capture fails, TrainingError says how to train without graphs."""
        if self.graph is None and self.warm < self.WARMUP:
            with self._side_stream():
                # detached at once: no autograd graph of this step outlives it, so the next
                # step and the capture make their gradient accumulators afresh (a stale one
                # from another stream makes PyTorch warn of a stream mismatch and sync)
                parts = {k: v.detach() for k, v in eager(idx).items()}
            self.warm += 1
            for k, v in parts.items():  # the accumulators, made outside the graph
                self.sums.setdefault(k, torch.zeros_like(v))
            return parts
        self.idx.copy_(idx)
        if self.graph is None:
            try:
                self._capture()
            except RuntimeError as e:
                # a failed capture can leave CUDA's current stream and (before PyTorch 2.13)
                # its random generator in capture mode: going on eagerly is not safe
                said = str(e).strip()
                reason = said.splitlines()[0][:200] if said else type(e).__name__
                raise TrainingError(
                    f"stage {self.stage.name}: CUDA graph capture failed ({reason}); run "
                    "again with DEEPCLUSTER_CUDA_GRAPHS=0 to train without CUDA graphs"
                ) from e
        self.graph.replay()
        self.replays += 1
        return None

    @contextmanager
    def _side_stream(self):
        """Work on a side stream that starts after, and ends before, the current stream's."""
        stream = torch.cuda.current_stream(self.trainer.device)
        if self.side is None:  # one side stream for every warm-up step
            self.side = torch.cuda.Stream(self.trainer.device)
        self.side.wait_stream(stream)
        with torch.cuda.stream(self.side):
            yield
        stream.wait_stream(self.side)

    def _capture(self) -> None:
        data, stage = self.trainer.data, self.stage
        self.opt.zero_grad(set_to_none=True)  # the backward inside makes the graph's grads
        self.graph = torch.cuda.CUDAGraph()
        # on the data's GPU (torch.cuda.graph's own stream would be on the current device,
        # cuda:0, and a step on cuda:1 would not be recorded) and on the warm-up's stream
        with torch.cuda.device(self.trainer.device), torch.cuda.graph(self.graph, stream=self.side):
            parts = stage.loss(data[self.idx], self.idx)
            parts["loss"].backward()
            self.opt.step()
            for k, v in parts.items():
                self.sums[k].add_(v.detach())
        # the capture recorded the step and ran none of it: the replay that follows runs it

    def take_sums(self) -> dict[str, Tensor]:
        out = {k: v.clone() for k, v in self.sums.items()}
        for v in self.sums.values():
            v.zero_()
        return out


def lr_option(stage: str) -> str:
    """The option that sets a stage's learning rate: a method's own pretraining has its own
    setting under `train` (`aekm` has no --lr at all)."""
    if stage == "pretrain":
        return "--lr of deepcluster pretrain; --set pretrain_lr=X in deepcluster train"
    return "--lr"


class Trainer:
    """Runs stages over one data tensor and keeps the training history."""

    def __init__(
        self,
        data: Tensor,
        *,
        progress: Progress | None = None,
        control: RunControl | None = None,
    ):
        if data.ndim != 2 or len(data) == 0:
            raise UsageError("training data must be a non-empty 2-D table")
        self.data = data  # (n, D), already on the training device
        self.progress = progress or Progress(quiet=True)
        self.history: list[dict] = []
        # Interruption and resumption. Every call of run() gets the next index; a method's
        # fit() makes the same calls in the same order for the same settings, so a resumed
        # fit() replays finished stages by loading their final state instead of training,
        # and continues the interrupted one at the epoch it stopped in.
        self.run_index = 0
        self.finished: dict[str, dict] = {}  # str(run index) -> the module's final state
        self.resume: dict | None = None
        self.control = control or RunControl()
        if not distributed.world().active:  # under torchrun every rank stops at a step end
            self.control.resumable = self.state_between_stages
        self.batch_share = 1.0  # this rank's share of the current global batch (torchrun)
        self.graph_steps = 0  # steps run as a replayed CUDA graph (GraphStep)

    @property
    def stop_signal(self) -> int | None:
        return self.control.stop_signal

    @property
    def deadline(self) -> float | None:
        return self.control.deadline

    def state_between_stages(self) -> dict:
        """A resumable state when no stage is running: the finished stages (a resumed run
        still replaying its finished stages keeps the state it resumed from)."""
        if self.resume is not None:
            return self.resume
        return {"finished": dict(self.finished), "current": None, "history": list(self.history)}

    def resume_from(self, state: dict) -> None:
        """Continue from a state carried by :class:`StopTraining` (read from a checkpoint)."""
        self.resume = state
        self.history = list(state.get("history", []))

    @property
    def device(self) -> torch.device:
        return self.data.device

    def batches(self, stage: Stage) -> Iterable[Tensor]:
        """Index batches of one epoch. Under torchrun every rank walks the same (rank 0's)
        permutation and takes its contiguous shard of each global batch of ``batch_size``
        rows; a last batch with fewer rows than ranks is skipped."""
        n = len(self.data)
        bs, stop = self._batch_span(stage)
        order = torch.randperm(n, device=self.device) if stage.shuffle else None
        w = distributed.world()
        if w.active and order is not None:
            distributed.broadcast(order)
        for start in range(0, stop, bs):
            if order is None:
                idx = torch.arange(start, min(start + bs, n), device=self.device)
            else:
                idx = order[start : start + bs]
            if w.active:
                if len(idx) < w.size:
                    break
                lo, hi = distributed.shard_bounds(len(idx), w)
                self.batch_share = (hi - lo) / len(idx)
                idx = idx[lo:hi]
            yield idx

    def _epoch(
        self,
        model: nn.Module,
        stage: Stage,
        opt: torch.optim.Optimizer,
        averager=None,
        graph: GraphStep | None = None,
        epoch: int = 0,
    ) -> dict[str, Tensor]:
        sums: dict[str, Tensor] = {}
        steps = 0
        warmup = self._warmup_steps(stage)
        first = epoch * self.steps_per_epoch(stage)  # the stage's step count so far
        if stage.reduction not in ("mean", "sum"):
            raise UsageError(f"stage {stage.name}: reduction must be mean or sum")
        sync = None
        if distributed.world().active:
            sync = distributed.GradientSync([p for g in opt.param_groups for p in g["params"]])

        def add(parts: dict[str, Tensor], weight: float) -> None:
            for k, v in parts.items():  # under torchrun the ranks' weighted parts add up
                v = v.detach() if sync is None or weight == 1.0 else v.detach() * weight
                if k in sums:
                    sums[k].add_(v)
                else:
                    sums[k] = v.clone()

        for idx in self.batches(stage):
            steps += 1
            if graph is not None and len(idx) == graph.batch:
                parts = graph.step(idx, lambda i: self._step(stage, opt, i, 1.0, None, None)[0])
                if parts is not None:
                    add(parts, 1.0)
                if self.stop_signal is not None:
                    return None
                continue
            weight = self.batch_share if stage.reduction == "mean" else 1.0
            scale = min(1.0, (first + steps) / warmup) if warmup else 1.0
            parts, stop = self._step(stage, opt, idx, weight, sync, averager, scale)
            add(parts, weight)
            if sync is not None:
                if stop:  # decided together, so no rank waits on a collective alone
                    signum = int(distributed.all_reduce_max(self.control.stop_signal or 0))
                    self.control.stop_signal = signum or self.control.stop_signal
                    return None
            elif self.stop_signal is not None:
                return None
        if graph is not None:
            for k, v in graph.take_sums().items():
                sums[k] = sums[k] + v if k in sums else v
        return {k: v / max(steps, 1) for k, v in sums.items()}

    def _batch_span(self, stage: Stage) -> tuple[int, int]:
        """The batch size of an epoch and the end of the rows it walks (a last partial
        batch is left out under ``drop_last``)."""
        n = len(self.data)
        bs = max(1, min(stage.batch_size, n))
        return bs, (n - n % bs if stage.drop_last and n >= bs else n)

    def steps_per_epoch(self, stage: Stage) -> int:
        """How many batches :meth:`batches` gives in one epoch (one process)."""
        bs, stop = self._batch_span(stage)
        return -(-stop // bs)

    def _warmup_steps(self, stage: Stage) -> float:
        if stage.warmup_epochs < 0:
            raise UsageError(f"stage {stage.name}: warmup_epochs must be >= 0")
        return stage.warmup_epochs * self.steps_per_epoch(stage)

    def _step(
        self, stage: Stage, opt, idx: Tensor, weight: float, sync, averager, scale: float = 1.0
    ):
        """One eager optimisation step on the rows ``idx`` (``weight``: this rank's share of
        the batch's gradient under torchrun; ``scale``: of the learning rates, for this step
        only, the warm-up); returns (loss parts, whether the ranks decided to stop)."""
        rows = stage.batch_rows(idx) if stage.batch_rows else self.data[idx]
        if stage.before_step is not None:
            with torch.no_grad():
                stage.before_step(rows, idx)
        parts = stage.loss(rows, idx)
        if sync is not None and stage.batch_terms and stage.reduction == "sum":
            parts = _share_batch_terms(parts, stage.batch_terms, self.batch_share)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        stop = False
        if sync is not None:  # the global batch's gradient on every rank, and one stop
            stop = sync(weight, self.control.stop_signal is not None)
        if scale < 1.0:
            full = [g["lr"] for g in opt.param_groups]
            for g in opt.param_groups:
                g["lr"] = g["lr"] * scale
            opt.step()
            for g, lr in zip(opt.param_groups, full, strict=True):
                g["lr"] = lr
        else:
            opt.step()
        if stage.after_step is not None:
            with torch.no_grad():
                stage.after_step(rows, idx)
        if averager is not None:
            averager.update()
        return parts, stop

    def run(self, model: nn.Module, stage: Stage) -> list[dict]:
        """Train ``model`` for ``stage.epochs`` epochs (+1 averaging epoch if asked).

        Raises TrainingError, with the last good parameters restored, when the loss turns
        NaN or infinite; StopTraining, carrying a resumable state, on a stop request or when
        the deadline has passed at the end of an epoch.
        """
        index = str(self.run_index)
        self.run_index += 1
        resume = self.resume or {}
        if index in resume.get("finished", {}):
            # finished before the interruption: take its final state, train nothing
            model.load_state_dict(resume["finished"][index])
            self.finished[index] = resume["finished"][index]
            model.eval()
            return []
        model.train()
        graphed = graph_eligible(stage, self.device)
        opt = make_optimizer(stage.params, stage, capturable=graphed)
        # each group's starting learning rate, saved with a resumable state: a resumed run
        # given another one (after a NaN, a lower --lr) scales the saved rates by new / old
        base_lr = [float(g["lr"]) for g in opt.param_groups]
        first_epoch = 0
        current = resume.get("current")
        if current is not None and current["index"] == index:
            model.load_state_dict(current["module"])
            load_optimizer_state(opt, current["optimizer"], capturable=graphed)
            saved = current.get("base_lr")
            if (
                isinstance(saved, list)
                and len(saved) == len(base_lr)
                and all(isinstance(v, float) and v > 0 for v in saved)
            ):
                for g, new, old in zip(opt.param_groups, base_lr, saved, strict=True):
                    if new != old:
                        g["lr"] = g["lr"] * new / old
            first_epoch = int(current["epoch"])
            self.resume = None  # everything after this point trains normally
        elif current is None and self.resume is not None:
            self.resume = None  # a state saved between stages: this one is the first to train
        self._base_lr = base_lr
        self._stage_name = stage.name
        w = distributed.world()
        if w.active:
            # whatever each rank computed before this stage (k-means, GMM fits...), rank 0's
            # parameters are the ones trained
            distributed.broadcast_module(model)
            with self._rank_rng(w, index):
                return self._run(model, stage, opt, index, first_epoch)
        graph = None
        if graphed:
            graph = GraphStep(self, stage, opt, max(1, min(stage.batch_size, len(self.data))))
        try:
            return self._run(model, stage, opt, index, first_epoch, graph)
        finally:
            if graph is not None:
                self.graph_steps += graph.replays

    @contextmanager
    def _rank_rng(self, w, index: str):
        """Under torchrun, noise (dropout, denoising, sampling) differs between ranks inside
        a stage, and the shared generator state is restored after it, so code between stages
        draws the same numbers on every rank."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((torch.initial_seed() + 7919 * (w.rank + 1) + int(index)) % 2**63)
            yield

    def _run(self, model, stage, opt, index, first_epoch, graph=None) -> list[dict]:
        self.control.polling = True
        try:
            rows = self._epochs(model, stage, opt, index, first_epoch, graph)
        finally:
            self.control.polling = False
        if self.control.stop_signal is not None and self.control.resumable is not None:
            # the signal came after the loop's last check: the stage is finished, stop here
            raise StopTraining(self.state_between_stages(), self.control.stop_signal)
        return rows

    def _epochs(self, model, stage, opt, index, first_epoch, graph=None) -> list[dict]:
        rows: list[dict] = []
        total = stage.epochs + (1 if stage.average is not None else 0)
        # the last good parameters, to restore if the loss turns NaN: one buffer per run,
        # refreshed in place each epoch (no allocation in the loop)
        good = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # and the optimiser's state of the same moment, so that a NaN leaves a resumable state
        good_opt = OptimizerSnapshot(opt)
        with self.progress.stage(stage.name, total) as bar:
            for epoch in range(first_epoch, total):
                averaging = stage.average is not None and epoch == stage.epochs
                if epoch > first_epoch:
                    state = model.state_dict()
                    torch._foreach_copy_(list(good.values()), [state[k] for k in good])
                if (
                    stage.lr_decay_every
                    and epoch
                    and epoch % stage.lr_decay_every == 0
                    and not (epoch == first_epoch and first_epoch > 0)
                ):
                    for g in opt.param_groups:
                        g["lr"] = max(g["lr"] * stage.lr_decay, stage.lr_min)
                good_opt.take()  # after this epoch's decay: a resumed epoch does not redo it
                if stage.on_epoch_start is not None:
                    stage.on_epoch_start(epoch)
                t0 = time.perf_counter()
                averager = ParameterAverager(stage.average) if averaging else None
                means = self._epoch(
                    model, stage, opt, averager, graph if not averaging else None, epoch
                )
                if means is None:  # stop requested mid-epoch: redo this epoch on resume
                    self.history.extend(rows)
                    raise self._stop(index, epoch, model, opt, good if averaging else None)
                out_of_time = self.deadline is not None and time.monotonic() > self.deadline
                if distributed.world().active:
                    # the epoch's figures of the global batches, and one decision on time
                    means, out_of_time = self._reduce_epoch(means, out_of_time)
                # the one host sync of the epoch
                values = torch.stack(list(means.values())).tolist() if means else []
                seconds = time.perf_counter() - t0
                parts = dict(zip(means.keys(), values))
                if not all(math.isfinite(v) for v in values):
                    model.load_state_dict(good)
                    self.history.extend(rows)
                    raise TrainingDiverged(
                        f"the loss became {'NaN' if any(v != v for v in values) else 'infinite'}"
                        f" in stage '{stage.name}' epoch {epoch + 1}; the model was not saved",
                        lr_option(stage.name),
                        self._state(index, epoch, model, good_opt.state_dict()),
                    )
                if averager is not None:
                    averager.apply()
                row = {"stage": stage.name, "epoch": epoch + 1, "seconds": seconds, **parts}
                rows.append(row)
                bar.epoch(epoch + 1, parts, seconds)
                if out_of_time and epoch + 1 < total:
                    self.history.extend(rows)
                    raise self._stop(index, epoch + 1, model, opt, None)
        self.history.extend(rows)
        self.finished[index] = _cpu_state(model)
        model.eval()
        return rows

    @staticmethod
    def _reduce_epoch(means: dict[str, Tensor], out_of_time: bool):
        flag = torch.tensor([1.0 if out_of_time else 0.0])
        vals = torch.cat([torch.stack(list(means.values())).float().cpu(), flag]) if means else flag
        # (all_reduce_sum moves CPU tensors to the GPU and back under nccl)
        distributed.all_reduce_sum(vals)
        # each rank's parts were weighted by its share of every batch: the sum is the
        # global batches' mean
        reduced = {k: vals[i] for i, k in enumerate(means)}
        return reduced, bool(vals[-1].item() > 0)

    def _stop(self, index, epoch, model, opt, restore) -> StopTraining:
        if restore is not None:  # an averaging epoch cut short restarts from its beginning
            model.load_state_dict(restore)
        return StopTraining(self._state(index, epoch, model, opt.state_dict()), self.stop_signal)

    def _state(self, index: str, epoch: int, model: nn.Module, optimizer: dict) -> dict:
        """A resumable state: the finished runs, and run ``index`` to continue at ``epoch``
        from ``model``'s parameters and ``optimizer``'s state."""
        return {
            "finished": dict(self.finished),
            "current": {
                "index": index,
                "stage": self._stage_name,  # for people (deepcluster info): resuming uses index
                "epoch": epoch,
                "module": _cpu_state(model),
                "optimizer": optimizer,
                "base_lr": list(self._base_lr),
            },
            "history": list(self.history),
        }


def _share_batch_terms(parts: dict[str, Tensor], names, share: float) -> dict[str, Tensor]:
    """A rank's loss with its batch-level terms scaled by its share of the global batch."""
    out = dict(parts)
    for name in names:
        term = parts[name]
        out[name] = term * share
        out["loss"] = out["loss"] - term + out[name]
    return out


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class OptimizerSnapshot:
    """A copy of an optimiser's state (its tensors copied in place into buffers allocated
    once, its learning rates) that :meth:`state_dict` gives back in ``opt.state_dict()``'s
    form: the state at the last good epoch, for the resumable state a NaN leaves. The
    training loop calls :meth:`take` at every epoch start, before anything can fail."""

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt
        self.buffers: dict[tuple[int, str], Tensor] = {}
        self.other: dict[tuple[int, str], object] = {}
        self.lrs: list = []
        self._pairs: tuple[list[Tensor], list[Tensor]] | None = None

    def _entries(self):
        i = 0
        for group in self.opt.param_groups:
            for p in group["params"]:
                for key, value in self.opt.state.get(p, {}).items():
                    yield (i, key), value
                i += 1

    @torch.no_grad()
    def take(self) -> None:
        self.lrs = [g["lr"] for g in self.opt.param_groups]
        tensors, other = [], {}
        for key, value in self._entries():
            if isinstance(value, Tensor):
                tensors.append((key, value))
            else:
                other[key] = copy.deepcopy(value)
        self.other = other
        sources = [v for _, v in tensors]
        if (
            self._pairs is not None
            and len(sources) == len(self._pairs[0])
            and all(a is b for a, b in zip(sources, self._pairs[0], strict=True))
        ):
            if sources:  # the common case: the same tensors, copied without allocating
                torch._foreach_copy_(self._pairs[1], sources)
            return
        # the first epochs (Adam makes its state at the first step), or new state tensors
        self.buffers = {key: v.detach().clone() for key, v in tensors}
        self._pairs = (sources, list(self.buffers.values()))

    def state_dict(self) -> dict:
        sd = self.opt.state_dict()
        state: dict[int, dict] = {}
        for (i, key), value in list(self.buffers.items()) + list(self.other.items()):
            state.setdefault(i, {})[key] = (
                value.detach().cpu().clone() if isinstance(value, Tensor) else value
            )
        groups = [{**g, "lr": lr} for g, lr in zip(sd["param_groups"], self.lrs, strict=True)]
        return {"state": state, "param_groups": groups}


class TrainingDiverged(TrainingError):
    """The loss turned NaN or infinite (``head`` says where); the last good parameters are
    restored, and ``state`` resumes the run from the start of the failing epoch (``--resume``
    with a lower learning rate, ``lr_option``, continues from it)."""

    def __init__(self, head: str, lr_option: str, state: dict):
        super().__init__(
            f"{head}. Lower the learning rate ({lr_option}) or scale the data (--scale standard)."
        )
        self.head = head
        self.lr_option = lr_option
        self.state = state


class StopTraining(Exception):
    """Training stopped early on request (signal) or at the deadline; ``state`` resumes it."""

    def __init__(self, state: dict, signum: int | None):
        super().__init__("training stopped")
        self.state = state
        self.signum = signum


class ParameterAverager:
    """Running mean of every parameter of a module, one update per optimisation step."""

    def __init__(self, module: nn.Module):
        self.params = [p for p in module.parameters()]
        self.sums = [torch.zeros_like(p) for p in self.params]
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_add_(self.sums, [p.detach() for p in self.params])
        self.count += 1

    @torch.no_grad()
    def apply(self) -> None:
        if self.count:
            for p, s in zip(self.params, self.sums):
                p.copy_(s / self.count)


@torch.no_grad()
def batched_apply(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 4096) -> Tensor:
    """Apply ``fn`` to ``x`` in row batches and concatenate (inference on large sets)."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

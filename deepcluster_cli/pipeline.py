"""The library functions the commands (and the Python API) call: fit, save, load, predict.

Commands parse options and write outputs; everything between lives here, so the CLI and
``DeepClusterer`` share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deepcluster_cli.config import build_config, config_from_dict, config_to_dict
from deepcluster_cli.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from deepcluster_cli.engine.progress import Progress
from deepcluster_cli.engine.seed import seed_everything
from deepcluster_cli.engine.trainer import RunControl, Trainer
from deepcluster_cli.errors import ModelError, TrainingError, UsageError
from deepcluster_cli.io import Scaler
from deepcluster_cli.methods import get_method
from deepcluster_cli.methods.base import FitContext, Method


@dataclass
class FitResult:
    method: Method
    config: Any
    model: nn.Module
    n_clusters: int
    labels: np.ndarray  # (n,) labels of the training rows
    history: list[dict]
    selection: dict = field(default_factory=dict)  # restarts, criterion, scores, kept


@dataclass
class LoadedModel:
    method: Method
    config: Any
    model: nn.Module
    scaler: Scaler
    checkpoint: Checkpoint

    @property
    def n_clusters(self) -> int:
        return int(self.checkpoint.extra.get("n_clusters", 0))


def check_n_clusters(k: int, n_rows: int) -> None:
    if k < 2:
        raise UsageError(f"-k {k}: need at least 2 clusters")
    if k > n_rows:
        raise UsageError(f"-k {k}: more clusters than rows ({n_rows})")


def check_pretrained_used(m: Method, cfg: Any, given: bool) -> None:
    """Refuse an autoencoder the method would not read, rather than ignore it."""
    why = m.pretrained_unused(cfg) if given else None
    if why:
        raise UsageError(f"--pretrained would be ignored: {why}; drop it")


# the settings that shape a deep method's network, and their keys in an autoencoder's spec
_NETWORK_SETTINGS = {
    "arch": "arch",
    "latent": "latent",
    "activation": "activation",
    "recon_loss": "loss",
}


_PRETRAINING_SETTINGS = ("pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "noise")


def check_pretrained_network(
    cfg: Any, layers: list[tuple[str, dict]], ae_spec: dict, *, used: tuple[str, ...] = ()
) -> None:
    """With ``--pretrained`` the network is the file's: refuse a network setting the user gave
    (``--set``, ``--config``) that differs from it, rather than ignore it, and a pretraining
    setting given with ``--set`` (not in ``used``, the ones the method still reads). A
    preset's values are for pretraining without ``--pretrained`` and are not the user's, and
    a ``--config`` file may serve runs with and without it, so those pass."""
    given: dict[str, str] = {}
    for source, layer in layers:
        if not source.startswith("--preset"):
            given.update({key.replace("-", "_"): source for key in layer})
    for name in _PRETRAINING_SETTINGS:
        if given.get(name) == "--set" and name not in used and hasattr(cfg, name):
            raise UsageError(
                f"--set {name}: a pretraining setting, and the autoencoder comes from "
                "--pretrained, so it would change nothing; drop it (or --pretrained, to "
                "pretrain one with it)"
            )
    for name, key in _NETWORK_SETTINGS.items():
        if name not in given or not hasattr(cfg, name):
            continue
        want, have = getattr(cfg, name), ae_spec[key]
        if name == "arch":
            want, have = tuple(want), tuple(have)
        if want == have or (name == "recon_loss" and want == "auto"):
            continue
        shown = ",".join(map(str, have)) if name == "arch" else have
        raise UsageError(
            f"{given[name]} {name}: the pretrained autoencoder has {name} {shown}, and its "
            f"network is used as it is; drop {name}, or pretrain an autoencoder with it"
        )


def check_restart_pretrain(m: Method, cfg: Any, pretrained_given: bool, on: bool) -> None:
    """``--restart-pretrain``: refuse it where every restart could not pretrain its own
    autoencoder (one is given, or the method has none), rather than ignore it."""
    if not on:
        return
    if pretrained_given:
        raise UsageError(
            "--restart-pretrain pretrains an autoencoder in each restart; drop --pretrained "
            "(or --restart-pretrain to start every restart from that one)"
        )
    why = m.restart_pretrain_unused(cfg)
    if why:
        raise UsageError(f"--restart-pretrain would change nothing: {why}; drop it")


def check_selection(m, method: str, restarts: int, select: str | None) -> str:
    """``--restarts`` and ``--select`` for method ``m``; returns the criterion to select by."""
    if restarts < 1:
        raise UsageError("--restarts must be at least 1")
    select = select or m.selection[0]
    if select not in m.selection:
        raise UsageError(f"--select {select}: {method} offers {', '.join(m.selection)}")
    return select


def fit(
    x: np.ndarray,
    *,
    method: str,
    n_clusters: int,
    layers: list[tuple[str, dict]] | None = None,
    config: Any = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    pretrained: Checkpoint | None = None,
    restarts: int = 1,
    select: str | None = None,
    restart_pretrain: bool = False,
    control: RunControl | None = None,
    resume: dict | None = None,
) -> FitResult:
    """Fit ``method`` on the (already scaled) rows ``x``; keep the best of ``restarts``.
    The restarts share one autoencoder (``pretrained``, or one pretrained in the first), so
    they differ in the clustering start; with ``restart_pretrain`` each restart pretrains
    its own with its seed, as that many independent runs would."""
    m = get_method(method)
    cfg = config if config is not None else build_config(m.Config, layers or [])
    check_n_clusters(n_clusters, len(x))
    check_pretrained_used(m, cfg, pretrained is not None)
    check_restart_pretrain(m, cfg, pretrained is not None, restart_pretrain)
    select = check_selection(m, method, restarts, select)
    progress = progress or Progress(quiet=True)
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
    trainer = Trainer(xt, progress=progress, control=control)
    if resume is not None:
        trainer.resume_from(resume)
    shared_ae: dict = {}
    best, best_score, scores = None, None, []
    for r in range(restarts):
        run_seed = seed + r
        seed_everything(run_seed)
        if restarts > 1:
            progress.info(f"restart {r + 1}/{restarts} (seed {run_seed})")
        ctx = FitContext(
            n_clusters=n_clusters,
            trainer=trainer,
            progress=progress,
            seed=run_seed,
            pretrained=pretrained,
            _ae_cache={} if restart_pretrain else shared_ae,
        )
        n_hist, n_stages = len(trainer.history), trainer.run_index
        model = m.fit(xt, cfg, ctx)
        for row in trainer.history[n_hist:]:
            row["restart"] = r
        model.eval()
        if trainer.run_index > n_stages:  # trained here (or restored by --resume): it may
            # have collapsed its representation
            check_representation(m, model, xt, cfg)
        if restarts > 1:
            with torch.no_grad():
                score = m.criterion(model, xt, select)
            scores.append(score)
            progress.info(f"restart {r + 1}: {select} = {score:.6g}")
            if best_score is None or score < best_score:
                best, best_score = (r, model), score
        else:
            best = (0, model)
    kept, model = best
    labels = predict_tensor(m, model, xt).labels.cpu().numpy()
    selection = {"restarts": restarts, "criterion": select, "scores": scores, "kept": kept}
    if restart_pretrain:
        selection["restart_pretrain"] = True
    return FitResult(m, cfg, model, n_clusters, labels, trainer.history, selection)


@torch.no_grad()
def check_representation(m: Method, model: nn.Module, x: torch.Tensor, cfg: Any) -> None:
    """Refuse a model whose representation (``m.embed``) sends every row to one point,
    which a learning rate too high for the data can do in a few steps: all rows would land
    in one cluster (and a restart criterion such as the codes' inertia would prefer it). One
    decision for all ranks of a torchrun job."""
    from deepcluster_cli.engine import distributed
    from deepcluster_cli.nn.mlp import overflow_reason, same_for_every_row

    def embed(rows: torch.Tensor) -> torch.Tensor:
        return m.embed(model, rows)

    lr = getattr(cfg, "lr", None)
    hint = f" (--lr; this run had {lr:g})" if lr else ""
    overflow = overflow_reason(embed, x, "representations")
    if distributed.all_reduce_max(1.0 if overflow is not None else 0.0) > 0:
        raise TrainingError(
            f"{m.name}: training overflowed the model's weights: "
            f"{overflow or 'some rows overflow on some rank'}; nothing was saved. Start over "
            f"with a lower learning rate{hint}"
        )
    collapsed = same_for_every_row(embed, x)
    if distributed.all_reduce_max(1.0 if collapsed else 0.0) > 0:
        raise TrainingError(
            f"{m.name}: training collapsed the representation: all {len(x)} rows map to one "
            "point, so they would all fall in one cluster; nothing was saved. Start over with "
            f"a lower learning rate{hint}"
        )


@torch.no_grad()
def predict_tensor(m: Method, model: nn.Module, x: torch.Tensor, batch_size: int = 4096):
    from deepcluster_cli.methods.base import Prediction

    model.eval()
    labels, probas = [], []
    for i in range(0, len(x), batch_size):
        p = m.predict(model, x[i : i + batch_size])
        labels.append(p.labels)
        probas.append(p.proba)
    proba = None if any(p is None for p in probas) else torch.cat(probas)
    return Prediction(labels=torch.cat(labels), proba=proba)


def save_model(
    path: str, result: FitResult, *, schema: dict, scaler: Scaler, extra: dict | None = None
) -> None:
    ckpt = Checkpoint(
        kind="model",
        method=result.method.name,
        config=config_to_dict(result.config),
        schema=schema,
        scaler=scaler.to_state(),
        state=result.model.state_dict(),
        history=result.history,
        extra={
            "spec": result.model.spec,
            "n_clusters": result.n_clusters,
            "selection": result.selection,
            **(extra or {}),
        },
    )
    save_checkpoint(path, ckpt)


def load_model(path: str, *, device: torch.device | str = "cpu") -> LoadedModel:
    ckpt = load_checkpoint(path, kinds=("model",))
    if ckpt.method == "autoencoder":
        raise ModelError(f"{path}: is an autoencoder; train a method on it first")
    try:
        m = get_method(ckpt.method)
    except UsageError as exc:  # a model of a method this version does not have
        raise ModelError(f"{path}: {exc}") from None
    try:
        cfg = config_from_dict(m.Config, ckpt.config)
        spec = ckpt.extra["spec"]
        k = spec.get("n_clusters") if isinstance(spec, dict) else None
        if k is not None and k != ckpt.extra["n_clusters"]:  # the tensors' k is the spec's
            raise ModelError(
                f"{path}: damaged checkpoint: n_clusters is {ckpt.extra['n_clusters']} but its "
                f"model has {k} clusters"
            )
        model = m.build(spec)
        model.load_state_dict(ckpt.state)
    except (KeyError, RuntimeError, TypeError, ValueError, UsageError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"{path}: checkpoint does not match method {ckpt.method} ({first})"
        ) from None
    model.to(device).eval()
    return LoadedModel(m, cfg, model, Scaler.from_state(ckpt.scaler), ckpt)


@torch.no_grad()
def predict(
    loaded: LoadedModel,
    x: np.ndarray,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4096,
    embedding: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Labels, probabilities (or None) and embedding (or None) for raw rows ``x``."""
    xs = torch.as_tensor(loaded.scaler.transform(x), device=device)
    p = predict_tensor(loaded.method, loaded.model, xs, batch_size)
    emb = None
    if embedding:
        emb = loaded.method.embed(loaded.model, xs).cpu().numpy()
    proba = p.proba.cpu().numpy() if p.proba is not None else None
    return p.labels.cpu().numpy(), proba, emb


@dataclass(frozen=True)
class PretrainConfig:
    """``deepcluster pretrain``: Adam, lr 1e-3, batch 256, 50 epochs (spec: our choice)."""

    arch: tuple[int, ...] = (500, 500, 2000)
    latent: int = 10
    activation: str = "relu"
    variational: bool = False
    noise: float = 0.0
    loss: str = "auto"
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3

    def validate(self) -> None:
        from deepcluster_cli.nn.mlp import check_autoencoder_settings

        keys = ("arch", "latent", "noise", "epochs", "batch_size", "lr", "activation", "loss")
        check_autoencoder_settings(
            **{k: getattr(self, k) for k in keys},
            names={k: "--" + k.replace("_", "-") for k in keys},
        )


def pretrain(
    x: np.ndarray,
    cfg: PretrainConfig,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    control: RunControl | None = None,
    resume: dict | None = None,
):
    """Train an autoencoder on the (scaled) rows ``x``; returns (autoencoder, history)."""
    from deepcluster_cli.methods.base import pretrain_autoencoder
    from deepcluster_cli.nn.mlp import AEConfig, activation, resolve_recon_loss

    activation(cfg.activation)  # validates the name before any work
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)
    ae_cfg = AEConfig(
        n_features=xt.shape[1],
        arch=tuple(cfg.arch),
        latent=cfg.latent,
        activation=cfg.activation,
        variational=cfg.variational,
        loss=resolve_recon_loss(cfg.loss, xt),
    )
    trainer = Trainer(xt, progress=progress, control=control)
    if resume is not None:
        trainer.resume_from(resume)
    ae = pretrain_autoencoder(
        trainer, ae_cfg, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, noise=cfg.noise
    )
    return ae, trainer.history


def save_autoencoder(path: str, ae, cfg: PretrainConfig, *, history, schema, scaler) -> None:
    from dataclasses import asdict

    save_checkpoint(
        path,
        Checkpoint(
            kind="autoencoder",
            method="autoencoder",
            config=config_to_dict(cfg),
            schema=schema,
            scaler=scaler.to_state(),
            state=ae.state_dict(),
            history=history,
            extra={"spec": {"autoencoder": asdict(ae.cfg)}},
        ),
    )


def resume_path(output: str) -> str:
    """Where an interrupted run keeps its resumable state: beside the output."""
    return f"{output}.resume"


def save_resume(output: str, *, run: dict, schema: dict, scaler: Scaler, state: dict) -> str:
    """Write the state a stopped run continues from; ``run`` identifies the run (method,
    settings, k, seed, ...) so that ``--resume`` refuses a different command."""
    path = resume_path(output)
    save_checkpoint(
        path,
        Checkpoint(
            kind="resume",
            method=str(run.get("method", "autoencoder")),
            config=run,
            schema=schema,
            scaler=scaler.to_state(),
            state={},
            history=state["history"],
            extra={"trainer": state},
        ),
    )
    return path


def load_resume(output: str, *, run: dict, schema: dict, warn=None) -> tuple[dict, Scaler]:
    """The saved trainer state and scaler for ``--resume``; a different run is refused, except
    for its learning rates (``warn`` is told of each one changed): the run continues at the
    new rates, the saved ones scaled by new / old (``Trainer.run``)."""
    import os

    from deepcluster_cli.config import is_learning_rate

    path = resume_path(output)
    if not os.path.exists(path):
        raise UsageError(f"--resume: no resumable state at {path}; run without --resume")
    ck = load_checkpoint(path, kinds=("resume",))

    rates: list[tuple[str, object, object]] = []

    def first_difference(then: dict, now: dict, where: str = ""):
        for key in sorted(set(then) | set(now)):
            a, b = then.get(key), now.get(key)
            if isinstance(a, dict) and isinstance(b, dict):  # name the setting, not the dicts
                found = first_difference(a, b, f"{where}{key}.")
                if found is not None:
                    return found
            elif a != b:
                numbers = all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)
                )
                if where == "config." and is_learning_rate(key) and numbers and b > 0:
                    rates.append((key, a, b))
                    continue
                return f"{where}{key}", a, b
        return None

    found = first_difference(ck.config, run)
    if found is not None:
        key, then, now = found
        raise UsageError(
            f"--resume: {path} was saved by a different run ({key}: {then!r} there, {now!r} "
            "now); repeat the same command"
        )
    if ck.schema != schema:
        raise UsageError(f"--resume: {path} was saved for other data (columns differ)")
    for key, then, now in rates:
        if warn is not None:
            warn(f"--resume: continuing at {key}={now:g} (the interrupted run had {then:g})")
    return ck.extra["trainer"], Scaler.from_state(ck.scaler)

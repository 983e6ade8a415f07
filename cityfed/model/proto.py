"""The protobuf form of the model (``protos/cityfed/v1/model.proto``) and its file I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from google.protobuf.message import DecodeError

from cityfed.config.spec import Algorithm, ModelKind, Task, VariableSpec
from cityfed.core.inference import Inference
from cityfed.core.scaling import Scaler
from cityfed.errors import CityFedError
from cityfed.files import write_atomic
from cityfed.model.record import FederatedModel
from cityfed.v1 import model_pb2

__all__ = ["model_from_proto", "model_to_proto", "read_model", "write_model"]

_KIND_TO_PROTO: dict[ModelKind, model_pb2.Model.Kind.ValueType] = {
    "linear": model_pb2.Model.KIND_LINEAR,
    "ridge": model_pb2.Model.KIND_RIDGE,
    "logistic": model_pb2.Model.KIND_LOGISTIC,
    "poisson": model_pb2.Model.KIND_POISSON,
}
_PROTO_TO_KIND = {v: k for k, v in _KIND_TO_PROTO.items()}
_TASKS: dict[str, Task] = {
    "regression": "regression",
    "classification": "classification",
    "count": "count",
}
_ALGORITHMS: dict[str, Algorithm] = {"exact": "exact", "fedavg": "fedavg"}


def model_to_proto(model: FederatedModel) -> model_pb2.Model:
    """The protobuf message of ``protos/cityfed/v1/model.proto``."""
    message = model_pb2.Model(
        kind=_KIND_TO_PROTO[model.kind],
        task=model.task,
        features=[model_pb2.Variable(name=f.name, unit=f.unit) for f in model.features],
        target=model_pb2.Variable(name=model.target.name, unit=model.target.unit),
        standardize=model.standardize,
        scaler=model_pb2.ScalerStats(
            mean=model.scaler.mean.tolist(), scale=model.scaler.scale.tolist()
        ),
        coef_scaled=model.coef_scaled.tolist(),
        intercept_scaled=model.intercept_scaled,
        coef=model.coef.tolist(),
        intercept=model.intercept,
        alpha=model.alpha,
        c=model.C,
        metrics=dict(model.metrics),
        inference=_inference_to_proto(model),
        inference_note=model.inference_note,
        categories=[
            model_pb2.Category(name=name, levels=list(levels)) for name, levels in model.categories
        ],
        exposure=None
        if model.exposure is None
        else model_pb2.Variable(name=model.exposure.name, unit=model.exposure.unit),
        alpha_path=[model_pb2.AlphaScore(alpha=a, score=v) for a, v in model.alpha_path],
        provenance=model_pb2.Provenance(
            federation=model.federation,
            run_id=model.run_id,
            rounds=model.rounds,
            cities=list(model.cities),
            created_at=model.created_at,
            cityfed_version=model.cityfed_version,
            algorithm=model.algorithm,
            converged=model.converged,
            training_rows=model.training_rows,
            privacy=model_pb2.Privacy(
                min_rows_per_city=model.min_rows_per_city,
                secure_aggregation=model.secure_aggregation,
                epsilon=model.epsilon,
                delta=model.delta,
                cities=[
                    model_pb2.CityPrivacy(city=c, epsilon_run=run, epsilon_total=total)
                    for c, run, total in model.privacy_spent
                ],
            ),
        ),
    )
    return message


def model_from_proto(message: model_pb2.Model, source: str = "model") -> FederatedModel:
    """Rebuild a model from its protobuf message, checking its consistency."""
    kind = _PROTO_TO_KIND.get(message.kind)
    d = len(message.features)
    lengths = {
        "coef": len(message.coef),
        "coef_scaled": len(message.coef_scaled),
        "scaler.mean": len(message.scaler.mean),
        "scaler.scale": len(message.scaler.scale),
    }
    task = _TASKS.get(message.task)
    algorithm = _ALGORITHMS.get(message.provenance.algorithm)
    if kind is None or task is None or algorithm is None:
        raise CityFedError(
            f"{source}: not a CityFed model (kind={message.kind}, task={message.task!r}, "
            f"algorithm={message.provenance.algorithm!r})"
        )
    if d == 0 or any(v != d for v in lengths.values()):
        raise CityFedError(
            f"{source}: not a complete CityFed model (kind={message.kind}, "
            f"{d} features, lengths {lengths})"
        )
    prov = message.provenance
    return FederatedModel(
        kind=kind,
        task=task,
        features=tuple(VariableSpec(v.name, v.unit) for v in message.features),
        target=VariableSpec(message.target.name, message.target.unit),
        standardize=message.standardize,
        scaler=Scaler(np.array(message.scaler.mean), np.array(message.scaler.scale)),
        coef_scaled=np.array(message.coef_scaled, dtype=np.float64),
        intercept_scaled=message.intercept_scaled,
        coef=np.array(message.coef, dtype=np.float64),
        intercept=message.intercept,
        alpha=message.alpha,
        C=message.c,
        federation=prov.federation,
        run_id=prov.run_id,
        rounds=prov.rounds,
        cities=tuple(prov.cities),
        created_at=prov.created_at,
        cityfed_version=prov.cityfed_version,
        algorithm=algorithm,
        converged=prov.converged,
        training_rows=prov.training_rows,
        min_rows_per_city=prov.privacy.min_rows_per_city,
        secure_aggregation=prov.privacy.secure_aggregation,
        epsilon=prov.privacy.epsilon,
        delta=prov.privacy.delta,
        privacy_spent=tuple((c.city, c.epsilon_run, c.epsilon_total) for c in prov.privacy.cities),
        metrics=dict(message.metrics),
        inference=_inference_from_proto(message, d, source),
        inference_note=message.inference_note,
        categories=tuple((c.name, tuple(c.levels)) for c in message.categories),
        exposure=VariableSpec(message.exposure.name, message.exposure.unit)
        if message.HasField("exposure")
        else None,
        alpha_path=tuple((p.alpha, p.score) for p in message.alpha_path),
    )


def _inference_to_proto(model: FederatedModel) -> model_pb2.Inference | None:
    inference = model.inference
    if inference is None:
        return None
    names = ("(intercept)", *model.feature_names)
    rows = inference.rows(names)
    message = model_pb2.Inference(
        coefficients=[
            model_pb2.Coefficient(
                name=name,
                estimate=float(est),
                std_error=float(se),
                statistic=float(stat),
                p_value=float(p),
                ci_low=float(lo),
                ci_high=float(hi),
            )
            for name, est, se, stat, p, lo, hi in rows
        ],
        distribution=inference.distribution,
        df_resid=inference.df_resid,
    )
    for key in ("r2", "adj_r2", "rse"):
        value = getattr(inference, key)
        if value is not None:
            setattr(message, key, value)
    return message


def _inference_from_proto(message: model_pb2.Model, d: int, source: str) -> Inference | None:
    if not message.HasField("inference"):
        return None
    table = message.inference
    if len(table.coefficients) != d + 1 or table.distribution not in ("t", "normal"):
        raise CityFedError(
            f"{source}: inference: expected {d + 1} coefficients and a distribution, got "
            f"{len(table.coefficients)} and {table.distribution!r}"
        )

    def column(key: str) -> np.ndarray:
        return np.array([getattr(c, key) for c in table.coefficients], dtype=np.float64)

    distribution: Literal["t", "normal"] = "t" if table.distribution == "t" else "normal"
    return Inference(
        estimate=column("estimate"),
        std_error=column("std_error"),
        statistic=column("statistic"),
        p_value=column("p_value"),
        ci_low=column("ci_low"),
        ci_high=column("ci_high"),
        distribution=distribution,
        df_resid=table.df_resid,
        r2=table.r2 if table.HasField("r2") else None,
        adj_r2=table.adj_r2 if table.HasField("adj_r2") else None,
        rse=table.rse if table.HasField("rse") else None,
    )


def write_model(model: FederatedModel, path: str | Path) -> None:
    """Write ``model.pb`` atomically."""
    write_atomic(Path(path), model_to_proto(model).SerializeToString(deterministic=True))


def read_model(path: str | Path) -> FederatedModel:
    """Read a ``model.pb`` file.

    Raises
    ------
    CityFedError
        If the file is missing or is not a CityFed model.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CityFedError(f"{path}: model file not found") from None
    message = model_pb2.Model()
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise CityFedError(f"{path.name}: not a CityFed model (protobuf decode failed)") from None
    return model_from_proto(message, path.name)

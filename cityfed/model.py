"""The published model: a frozen record, its protobuf form and atomic file I/O."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from cityfed.errors import CityFedError
from cityfed.scaling import Scaler
from cityfed.spec import VariableSpec
from cityfed.v1 import model_pb2

__all__ = ["FederatedModel", "read_model", "write_atomic", "write_model"]

FloatArray = NDArray[np.float64]

_KIND_TO_PROTO = {
    "linear": model_pb2.Model.KIND_LINEAR,
    "ridge": model_pb2.Model.KIND_RIDGE,
    "logistic": model_pb2.Model.KIND_LOGISTIC,
}
_PROTO_TO_KIND = {v: k for k, v in _KIND_TO_PROTO.items()}


@dataclass(frozen=True)
class FederatedModel:
    """A fitted CityFed model with its provenance.

    ``coef_scaled`` / ``intercept_scaled`` act on features scaled by ``scaler``;
    ``coef`` / ``intercept`` are the same model in federation units.
    """

    kind: str
    task: str
    features: tuple[VariableSpec, ...]
    target: VariableSpec
    standardize: bool
    scaler: Scaler
    coef_scaled: FloatArray
    intercept_scaled: float
    coef: FloatArray
    intercept: float
    alpha: float = 0.0
    C: float = 0.0
    federation: str = ""
    run_id: str = ""
    rounds: int = 0
    cities: tuple[str, ...] = ()
    created_at: str = ""
    cityfed_version: str = ""
    algorithm: str = "exact"
    converged: bool = True
    training_rows: int = 0
    min_rows_per_city: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Federation names of the inputs, in order."""
        return tuple(f.name for f in self.features)

    def decision(self, X: FloatArray) -> FloatArray:
        """The linear predictor ``X @ coef + intercept`` on federation-unit rows."""
        return np.asarray(X, dtype=np.float64) @ self.coef + self.intercept

    def to_proto(self) -> model_pb2.Model:
        """The protobuf message of ``protos/cityfed/v1/model.proto``."""
        message = model_pb2.Model(
            kind=_KIND_TO_PROTO[self.kind],
            task=self.task,
            features=[model_pb2.Variable(name=f.name, unit=f.unit) for f in self.features],
            target=model_pb2.Variable(name=self.target.name, unit=self.target.unit),
            standardize=self.standardize,
            scaler=model_pb2.ScalerStats(
                mean=self.scaler.mean.tolist(), scale=self.scaler.scale.tolist()
            ),
            coef_scaled=self.coef_scaled.tolist(),
            intercept_scaled=self.intercept_scaled,
            coef=self.coef.tolist(),
            intercept=self.intercept,
            alpha=self.alpha,
            c=self.C,
            metrics=dict(self.metrics),
            provenance=model_pb2.Provenance(
                federation=self.federation,
                run_id=self.run_id,
                rounds=self.rounds,
                cities=list(self.cities),
                created_at=self.created_at,
                cityfed_version=self.cityfed_version,
                algorithm=self.algorithm,
                converged=self.converged,
                training_rows=self.training_rows,
                privacy=model_pb2.Privacy(min_rows_per_city=self.min_rows_per_city),
            ),
        )
        return message

    @classmethod
    def from_proto(cls, message: model_pb2.Model, source: str = "model") -> FederatedModel:
        """Rebuild a model from its protobuf message, checking its consistency."""
        kind = _PROTO_TO_KIND.get(message.kind)
        d = len(message.features)
        lengths = {
            "coef": len(message.coef),
            "coef_scaled": len(message.coef_scaled),
            "scaler.mean": len(message.scaler.mean),
            "scaler.scale": len(message.scaler.scale),
        }
        if kind is None or d == 0 or any(v != d for v in lengths.values()):
            raise CityFedError(
                f"{source}: not a complete CityFed model (kind={message.kind}, "
                f"{d} features, lengths {lengths})"
            )
        prov = message.provenance
        return cls(
            kind=kind,
            task=message.task,
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
            algorithm=prov.algorithm,
            converged=prov.converged,
            training_rows=prov.training_rows,
            min_rows_per_city=prov.privacy.min_rows_per_city,
            metrics=dict(message.metrics),
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model(model: FederatedModel, path: str | Path) -> None:
    """Write ``model.pb`` atomically."""
    write_atomic(Path(path), model.to_proto().SerializeToString(deterministic=True))


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
    return FederatedModel.from_proto(message, path.name)

"""The iterative baselines of the accuracy benchmark, and a Grid that meters traffic.

* **FedAvg** of locally fitted scikit-learn models, the approach of Flower's own
  scikit-learn examples: each round a city warm-starts at the global weights and
  fits its rows (``cityfed.core.fedavg.local_update``: one epoch of ``SGDRegressor``, or
  ``LogisticRegression(max_iter=local_epochs, warm_start=True)``); the server
  averages the weights by row count.
* **FedProx** (Li et al., 2020): the same averaging, but the local fit minimises
  the city's objective plus ``mu/2 ||w - w_global||^2``, by mini-batch SGD.

Both work on the federation's standardised features (the scaler the exact method
computes in its statistics round), as CityFed's ``algorithm = "fedavg"`` does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityfed_client.fedavg import local_update
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from numpy.typing import NDArray
from scipy.special import expit

from cityfed.config.spec import FederationSpec, federation_from_json, load_city
from cityfed.data.city_data import load_city_data
from cityfed.federation.protocol import Instruction
from cityfed.flower.records import decode_instruction

FloatArray = NDArray[np.float64]

#: Name of the ConfigRecord that marks a baseline message (CityFed's is "config").
BASELINE = "baseline"
_MODEL = "model"
_UPDATE = "update"
_METRICS = "metrics"
#: Weighting key, as in Flower's strategies.
NUM_EXAMPLES = "num-examples"


@dataclass(frozen=True)
class ProxSettings:
    """Local solver of FedProx: mini-batch SGD on the proximal local objective."""

    mu: float = 0.1
    learning_rate: float = 0.05
    batch_size: int = 32


def fedprox_update(
    Z: FloatArray,
    y: FloatArray,
    w_global: FloatArray,
    fed: FederationSpec,
    round_number: int,
    settings: ProxSettings,
) -> FloatArray:
    """One city's FedProx step: ``local_epochs`` epochs of mini-batch SGD.

    The local objective is the mean loss of the city's rows (half squared error,
    or log-loss), plus the model's L2 penalty divided by the city's row count
    (as in ``cityfed.core.fedavg.local_update``), plus ``mu/2 ||w - w_global||^2``.
    """
    n = y.shape[0]
    rng = np.random.default_rng([fed.seed, round_number, n])
    w = w_global.astype(np.float64).copy()
    ridge = fed.penalty / n
    for _ in range(max(1, fed.local_epochs)):
        order = rng.permutation(n)
        for start in range(0, n, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            Zb, yb = Z[rows], y[rows]
            t = w[0] + Zb @ w[1:]
            residual = expit(t) - yb if fed.task == "classification" else t - yb
            grad = np.empty_like(w)
            grad[0] = residual.mean()
            grad[1:] = Zb.T @ residual / rows.size + ridge * w[1:]
            grad += settings.mu * (w - w_global)
            w -= settings.learning_rate * grad
    return w


def _int(value: object) -> int:
    """A record value that must be a whole number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return int(value)


def _float(value: object) -> float:
    """A record value that must be a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _city_rows(context: Context, city_config: str, fed: FederationSpec) -> tuple[FloatArray, ...]:
    """The city's training rows, harmonised once per node and kept in its state."""
    key = f"rows:{fed.name}:{fed.target.name}"
    if key not in context.state.array_records:
        data = load_city_data(load_city(Path(city_config)), fed)
        context.state[key] = ArrayRecord(
            {"X": Array(data.X_train), "y": Array(data.y_train.astype(np.float64))}
        )
    record = context.state.array_records[key]
    return record["X"].numpy(), record["y"].numpy()


def baseline_reply(msg: Message, context: Context, city_config: str) -> Message:
    """A city's answer to one FedAvg or FedProx round."""
    config = msg.content.config_records[BASELINE]
    fed = federation_from_json(str(config["federation"]))
    X, y = _city_rows(context, city_config, fed)
    model = msg.content.array_records[_MODEL]
    mean, scale = model["mean"].numpy(), model["scale"].numpy()
    w_global = model["w"].numpy().astype(np.float64)
    Z = (X - mean) / scale
    round_number = _int(config["round"])
    if config["algorithm"] == "fedavg":
        w = local_update(Z, y, w_global, fed, round_number)
    else:
        settings = ProxSettings(
            mu=_float(config["mu"]),
            learning_rate=_float(config["learning_rate"]),
            batch_size=_int(config["batch_size"]),
        )
        w = fedprox_update(Z, y, w_global, fed, round_number, settings)
    content = RecordDict(
        {
            _UPDATE: ArrayRecord({"w": Array(np.ascontiguousarray(w, dtype=np.float64))}),
            _METRICS: MetricRecord({NUM_EXAMPLES: int(y.size)}),
        }
    )
    return Message(content, reply_to=msg)


def baseline_message(
    node: int,
    *,
    algorithm: str,
    fed_json: str,
    round_number: int,
    mean: FloatArray,
    scale: FloatArray,
    w: FloatArray,
    prox: ProxSettings,
    group: str,
) -> Message:
    """The instruction of one baseline round to one node."""
    config = ConfigRecord(
        {
            "algorithm": algorithm,
            "federation": fed_json,
            "round": round_number,
            "mu": prox.mu,
            "learning_rate": prox.learning_rate,
            "batch_size": prox.batch_size,
        }
    )
    model = ArrayRecord({"mean": Array(mean), "scale": Array(scale), "w": Array(w)})
    content = RecordDict({BASELINE: config, _MODEL: model})
    return Message(content, dst_node_id=node, message_type="train", group_id=group)


def reply_update(reply: Message) -> tuple[FloatArray, int]:
    """Weights and row count of a baseline reply."""
    w = reply.content.array_records[_UPDATE]["w"].numpy().astype(np.float64)
    n = _int(reply.content.metric_records[_METRICS][NUM_EXAMPLES])
    return w, n


def content_bytes(content: RecordDict) -> int:
    """Size of a message's content in Flower's protobuf wire encoding."""
    return int(recorddict_to_proto(content).ByteSize())


class MeteredGrid(Grid):
    """A Grid that forwards everything and meters what each city sends back.

    Every pushed message is tagged with the current :attr:`job`; for replies to
    ``train`` messages (training rounds; CityFed's holdout scoring travels as
    ``evaluate`` and is not counted) it adds the content's size to that job's
    count for the sending node. It also keeps the first CityFed ``newton``
    instruction of each round, i.e. the Newton iterate after the rounds so far.
    """

    def __init__(self, inner: Grid, *, poll_interval: float = 0.01) -> None:
        self.inner = inner
        self.poll_interval = poll_interval
        self.job = ""
        self._sent: dict[str, tuple[str, int, str]] = {}
        self.bytes_up: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.replies: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.newton: dict[str, dict[int, Instruction]] = defaultdict(dict)

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        ids = list(self.inner.push_messages(batch))
        pushed = set(ids)
        for msg in batch:
            meta = msg.metadata
            if meta.message_id in pushed:
                self._sent[meta.message_id] = (self.job, meta.dst_node_id, meta.message_type)
            self._observe(msg)
        return ids

    def _observe(self, msg: Message) -> None:
        config = msg.content.config_records.get("config")
        if config is None or config.get("phase") != "newton":
            return
        round_number = _int(config["round"])
        if round_number not in self.newton[self.job]:
            self.newton[self.job][round_number] = decode_instruction(msg.content)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        for reply in replies:
            sent = self._sent.pop(reply.metadata.reply_to_message_id, None)
            if sent is None or reply.has_error():
                continue
            job, node, message_type = sent
            if message_type.split(".")[0] == "train":
                self.bytes_up[job][node] += content_bytes(reply.content)
                self.replies[job][node] += 1
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        received: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            replies = list(self.pull_messages(list(pending)))
            received.extend(replies)
            pending.difference_update(r.metadata.reply_to_message_id for r in replies)
            if pending and not replies:
                time.sleep(self.poll_interval)
        return received

"""The city's gatekeeper: the only process that answers the city's SuperNode.

A city node runs ``flower-supernode --isolation process``, so the SuperNode
starts no ClientApp of its own; this long-lived process takes each task from
the SuperNode's runtime API (authenticated with a secret only the two share),
looks at the Flower App the coordinator sent *as data* (its id, version, hash,
file list and declared components; nothing is extracted or imported) and then
either answers with the CityFed ClientApp **installed on this host** or refuses.
A refusal is written to the city's audit trail with the app's id and hash and
sent back to the coordinator as an error reply (``INVALID_FAB``) with the reason.

This mirrors what Flower's own ``flower-superexec`` + ``flwr-clientapp`` do
(``flwr/supernode/runtime/run_clientapp.py``, the same in flwr 1.41 and 1.42) minus the one step
that matters: installing and importing the app's code.

    python -m cityfed_client.gatekeeper --runtime-api 127.0.0.1:9094
        --secret-file STATE/superexec.secret --config city.toml --state STATE
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import signal
import sys
import threading
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from flwr.app import Context, Error, Message
from flwr.app.message import remove_content_from_message
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    fab_from_proto,
    message_to_proto,
    run_from_proto,
)
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    PushAppMessagesRequest,
    PushTaskOutputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.auth import load_superexec_auth_secret
from flwr.supercore.constant import TaskType
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
    make_push_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import (
    pull_and_inflate_object_from_tree,
    push_objects,
)
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient

from cityfed.config.spec import load_city
from cityfed.errors import CityFedError
from cityfed.ops.audit import AuditLog
from cityfed.version import __version__
from cityfed_client.app import handle_message
from cityfed_client.node_config import NodeSettings

__all__ = ["CITYFED_APP_ID", "COMPONENTS", "AppIdentity", "check_app", "main"]

logger = logging.getLogger(__name__)

#: The app id (``publisher/name``) of the Flower App CityFed runs are submitted as.
CITYFED_APP_ID = "cityfed/cityfed-federation"
#: Its components: the installed apps, by import path (never code in the app).
COMPONENTS = {"serverapp": "cityfed_server.app:app", "clientapp": "cityfed_client.app:app"}
#: Heartbeats to the SuperNode while a task runs (it gives up after 60 s).
_HEARTBEAT_SECONDS = 15.0
#: How long a message may take to arrive from the SuperNode (CityFed's are small).
_PULL_SECONDS = 30.0


@dataclass(frozen=True)
class AppIdentity:
    """What the coordinator's Flower App says it is (read as data, never run)."""

    app_id: str
    version: str
    sha256: str
    files: tuple[str, ...]
    components: dict[str, str]

    def label(self) -> str:
        """How the audit trail names it."""
        return f"{self.app_id} {self.version} sha256:{self.sha256}"


def inspect_app(app_id: str, version: str, stated_hash: str, content: bytes) -> AppIdentity:
    """Read a Flower App archive's id, hash, files and components (zip and TOML only).

    Raises
    ------
    ValueError
        If the archive does not match its stated hash or is not a Flower App.
    """
    digest = hashlib.sha256(content).hexdigest()
    if digest != stated_hash:
        raise ValueError(
            f"its content hashes to {digest[:16]}…, not the stated {stated_hash[:16]}…"
        )
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        files = tuple(sorted(archive.namelist()))
        pyproject = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
    components = pyproject.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    return AppIdentity(
        app_id, version, digest, files, {str(k): str(v) for k, v in components.items()}
    )


def check_app(app: AppIdentity, accepted_versions: Sequence[str]) -> str | None:
    """Why the city refuses this app, or None when it is CityFed's own, accepted one."""
    if app.app_id != CITYFED_APP_ID:
        return (
            f"app {app.app_id!r} is not CityFed's ({CITYFED_APP_ID!r}); this node runs only CityFed"
        )
    code = [f for f in app.files if f != "pyproject.toml" and not f.startswith(".info/")]
    if code:
        return f"app {app.app_id!r} carries files ({code[0]!r}, ...); CityFed's app carries none"
    if app.components != COMPONENTS:
        return f"app {app.app_id!r} names components {app.components}, not CityFed's installed apps"
    if app.version not in accepted_versions:
        accepted = ", ".join(accepted_versions) or "none"
        return (
            f"[policy] accepted_versions = [{accepted}]: CityFed app version "
            f"{app.version!r} is not accepted by this city"
        )
    return None


class _Runtime:
    """The SuperNode's runtime API, as Flower's own ClientApp process uses it."""

    def __init__(self, address: str, secret: bytes) -> None:
        self.address = address
        self.secret = secret

    def client(self, token: str | None = None) -> RuntimeHttpClient:
        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
        if token is None:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=self.secret,
                    protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"}),
                )
            )
        else:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=True,
            root_certificates=None,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )


def _heartbeats(client: RuntimeHttpClient, stop: threading.Event) -> None:
    while not stop.wait(_HEARTBEAT_SECONDS):
        try:
            if not client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success:
                return
        except Exception as exc:  # a missed beat is retried; the task may still finish
            logger.warning("heartbeat failed: %s", exc)


def _push(client: RuntimeHttpClient, reply: Message, context: Context) -> None:
    reply.metadata.__dict__["_message_id"] = reply.object_id
    proto = message_to_proto(remove_content_from_message(reply))
    with no_object_id_recompute():
        tree = get_object_tree(reply)
        pushed = client.PushMessages(
            PushAppMessagesRequest(messages_list=[proto], message_object_trees=[tree])
        )
        push_objects(
            get_all_nested_objects(reply),
            make_push_object_fn_protobuf(
                client.PushObject,
                Node(node_id=context.node_id),
                run_id=context.run_id,
                session_id=pushed.session_id,
            ),
            object_ids_to_push=set(pushed.objects_to_push),
        )


class Gatekeeper:
    """Takes the SuperNode's tasks one at a time and answers or refuses each.

    Parameters
    ----------
    runtime : _Runtime
        The SuperNode's runtime API.
    settings : NodeSettings
        The city's config and the node's state (for the audit trail).
    """

    def __init__(self, runtime: _Runtime, settings: NodeSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.audit = AuditLog(settings.audit_log)
        self.stopping = threading.Event()
        self.busy = False  # answering a task: a stop waits for its reply

    def serve(self) -> None:
        """Poll for tasks until stopped."""
        acquirer = self.runtime.client()
        logger.info("gatekeeper for %s on %s", self.settings.city_config, self.runtime.address)
        while not self.stopping.is_set():
            try:
                task = acquirer.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
            except Exception as exc:  # the SuperNode restarts: keep trying
                logger.warning("runtime API not reachable: %s", exc)
                self.stopping.wait(2.0)
                continue
            if task.HasField("task") and task.token:
                self.busy = True
                try:
                    self.handle(task.token)
                finally:
                    self.busy = False
            else:
                self.stopping.wait(0.5)

    def _decide(self, app: AppIdentity | None, problem: str) -> str | None:
        if app is None:
            return f"the app sent could not be read as a Flower App ({problem})"
        try:
            city = load_city(self.settings.city_config)
        except CityFedError as exc:
            return f"the city's config cannot be read ({exc})"
        return check_app(app, city.policy.accepted_versions or (__version__,))

    def handle(self, token: str) -> None:
        """Answer or refuse one task; the reply is pushed before the task is closed."""
        client = self.runtime.client(token)
        stop = threading.Event()
        threading.Thread(target=_heartbeats, args=(client, stop), daemon=True).start()
        replied, context = False, None
        try:
            task = client.PullTaskInput(PullTaskInputRequest())
            context = context_from_proto(task.context)
            run, fab = run_from_proto(task.run), fab_from_proto(task.fab)
            pulled = client.PullMessages(PullAppMessagesRequest())
            tree = pulled.message_object_trees[0]
            node = Node(node_id=context.node_id)
            message = pull_and_inflate_object_from_tree(
                tree,
                make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
                make_confirm_message_received_fn_protobuf(
                    client.ConfirmMessageReceived, node, context.run_id
                ),
                return_type=Message,
                # Flower's default waits two hours for a message whose objects never
                # come (a SuperLink killed mid-transfer): this node would answer no
                # one meanwhile. Give up instead; the SuperNode then reports the task.
                max_time=_PULL_SECONDS,
            )
            message.metadata.__dict__["_message_id"] = tree.object_id
            app: AppIdentity | None = None
            problem = ""
            try:
                app = inspect_app(run.fab_id, run.fab_version, fab.hash_str, fab.content)
                if fab.hash_str != run.fab_hash:
                    raise ValueError("the app's hash differs from the run's")
            except (ValueError, KeyError, zipfile.BadZipFile, tomllib.TOMLDecodeError) as exc:
                app, problem = None, str(exc)
            refusal = self._decide(app, problem)
            label = app.label() if app else f"{run.fab_id} {run.fab_version} sha256:{fab.hash_str}"
            if refusal is not None:
                self._audit_refusal(context, label, message, refusal)
                reply = Message(Error(code=ErrorCode.INVALID_FAB, reason=refusal), reply_to=message)
                status, details = SubStatus.FAILED, refusal
            else:
                try:
                    reply = handle_message(message, context, app=f"{label} -> installed app")
                    status, details = SubStatus.COMPLETED, ""
                except Exception as exc:  # as Flower's ClientApp process reports it
                    reason = str(type(exc)) + ":<'" + str(exc) + "'>"
                    reply = Message(
                        Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                        reply_to=message,
                    )
                    status, details = SubStatus.FAILED, reason
            _push(client, reply, context)
            replied = True
            client.PushTaskOutput(
                PushTaskOutputRequest(
                    context=context_to_proto(context), sub_status=status, details=details
                )
            )
        except Exception as exc:
            # Without a reply the task is left open: the SuperNode then reports the
            # node as crashed to the coordinator (closing it without a reply would
            # wedge the SuperNode).
            logger.error("task not answered (%s): %r", "reply sent" if replied else "no reply", exc)
        finally:
            stop.set()
            client.close()

    def _audit_refusal(self, context: Context, app: str, message: Message, reason: str) -> None:
        try:
            self.audit.append(
                "refused",
                run=str(context.run_id),
                app=app,
                message_type=message.metadata.message_type,
                reason=reason,
            )
        except (OSError, CityFedError) as exc:
            logger.error("refusal not written to the audit trail: %s", exc)
        logger.warning("refused run %s: %s (%s)", context.run_id, reason, app)


def main(argv: list[str] | None = None) -> int:
    """Run the gatekeeper until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m cityfed_client.gatekeeper")
    parser.add_argument("--runtime-api", required=True, help="HOST:PORT of the SuperNode")
    parser.add_argument("--secret-file", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path, help="the city's city.toml")
    parser.add_argument("--state", required=True, type=Path, help="the node's state folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    secret = load_superexec_auth_secret(str(args.secret_file))
    assert secret is not None
    keeper = Gatekeeper(_Runtime(args.runtime_api, secret), NodeSettings(args.config, args.state))

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        keeper.stopping.set()
        if not keeper.busy:  # idle (perhaps waiting on the runtime API): leave now
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    keeper.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

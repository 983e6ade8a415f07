"""``cityfed-supernode``: Flower's SuperNode, saying why the coordinator cut it off.

When the coordinator revokes a node's key, the SuperLink answers the node's next
heartbeat with HTTP 401 and Flower's SuperNode stops itself with nothing but
"SuperNode terminated gracefully". This entry point runs the very same
``flower-supernode`` (same arguments, same code) with one addition: a filter on
the HTTP client's log that lets through only 401 answers, rewritten as one line
that names the reason, which ``cityfed city status`` then reports.
"""

from __future__ import annotations

import logging
import sys

from flwr.supernode.cli import flower_supernode

from cityfed_client.node_config import CUT_OFF

__all__ = ["main"]


class _Refusals(logging.Filter):
    """Keep only httpx's "HTTP Request" records of 401 answers, reworded."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 4 or args[3] != 401:
            return False
        path = str(args[1]).split("/v1/", 1)[-1]
        record.msg = (
            f"{CUT_OFF} (HTTP 401 on /v1/{path}): its key was revoked or is no longer "
            "enrolled, so the SuperNode stops; ask the coordinator to enrol it again"
        )
        record.args = ()
        record.levelno, record.levelname = logging.ERROR, "ERROR"
        return True


def main() -> None:
    """Run ``flower-supernode`` with the refusal filter on the HTTP client's log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Refusals())
    handler.setFormatter(logging.Formatter("%(levelname)s: %(asctime)s %(message)s"))
    http_log = logging.getLogger("httpx")
    http_log.addHandler(handler)
    http_log.setLevel(logging.INFO)
    http_log.propagate = False
    flower_supernode()


if __name__ == "__main__":
    main()

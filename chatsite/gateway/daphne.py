"""Run a gateway under Daphne with the protocol's frame limit closing 1009.

`python -m chatsite.gateway.daphne <daphne's arguments>` is `python -m daphne` with one
change: a frame or message over `--websocket-max-message-size` is refused with a close
frame 1009 (message too big), as the protocol promises and uvicorn does, instead of
Autobahn's default of dropping the TCP connection (the client sees 1006 and cannot tell
a limit from a crash). The application checks the size too, but a frame over Daphne's
own cap never reaches it.
"""

from __future__ import annotations

from typing import Any

import daphne.server
from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory


class ClosingWebSocketFactory(WebSocketFactory):  # type: ignore[misc]
    """Daphne's factory with `failByDrop` off: protocol violations get a close frame."""

    def setProtocolOptions(self, **options: Any) -> None:
        """Set Daphne's options, and `failByDrop=False`."""
        super().setProtocolOptions(failByDrop=False, **options)


def main() -> None:
    """Start Daphne with the closing factory."""
    daphne.server.WebSocketFactory = ClosingWebSocketFactory  # the module Server reads it from
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

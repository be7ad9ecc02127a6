"""The ``mlafleet`` command line (typer).

Each group of commands lives in its own module with a ``register(app)`` function, so the
worker's commands, the fleet's and the API client's can change independently.
"""

from __future__ import annotations

import logging
import os

import typer

from . import client_cmds, dashboard_cmd, fleet_cmds, local_cmds

app = typer.Typer(
    name="mlafleet",
    help=(
        "Tune, validate and serve Multi-head Latent Attention (MLA) Triton kernels on every GPU "
        "of a fleet."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

local_cmds.register(app)
fleet_cmds.register(app)
client_cmds.register(app)
dashboard_cmd.register(app)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(
        level=os.environ.get("MLAFLEET_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app()


if __name__ == "__main__":
    main()

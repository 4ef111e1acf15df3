"""The `corticast` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="corticast: real-time travelling-wave prediction beside a µECoG rig.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def version() -> None:
    """Print the installed corticast version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("corticast"))

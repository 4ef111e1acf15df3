"""Every command's help as a user reads it: config section names, code and sentences intact."""

import re

import pytest
import typer
from typer.testing import CliRunner

from service.cli.app import app

_SECTION = re.compile(r"\[[a-z_.]+\]")
"""A config section as help texts name it: ``[stream]``, ``[model]``, ``[bridge]``..."""


def _commands() -> dict[str, typer.core.TyperCommand]:
    return typer.main.get_command(app).commands


def _written(command: typer.core.TyperCommand) -> str:
    """The command's help as written in the source: its docstring and its options' help."""
    return " ".join([command.help or "", *(getattr(p, "help", None) or "" for p in command.params)])


def _help(name: str) -> str:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_section_named_in_a_commands_help_survives_rendering(name):
    command = _commands()[name]
    written = " ".join(
        [command.help or "", *(getattr(p, "help", "") or "" for p in command.params)]
    )
    rendered = _help(name)
    for section in set(_SECTION.findall(written)):
        assert section in rendered, f"{name}: {section} was eaten by the help renderer"
    assert "``" not in rendered, f"{name}: RST literal markup shows raw"


def test_the_commands_that_name_sections_are_among_those_checked():
    """The parametrised test above checks something: these helps do name sections."""
    named = {name for name, command in _commands().items() if _SECTION.search(_written(command))}
    assert {"rig", "firmware-emulator", "export"} <= named


def test_a_docstring_paragraph_is_one_line_on_a_wide_terminal():
    """Docstring line breaks are not kept: a paragraph wraps at the terminal, not mid-sentence."""
    rendered = _help("train")
    # "... it is" / "fitted on the training split" straddle a line break in the source.
    assert "with the fixed normalisation it is fitted on the training split" in rendered


def _as_help_shows(value: object) -> str:
    if isinstance(value, bool):
        return "which is on" if value else "which is off"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


@pytest.mark.parametrize(
    ("option", "key"),
    [("source", "source"), ("seed", "seed"), ("duration", "duration_s"),
     ("chunk_size", "chunk_size"), ("speed", "speed"), ("loop", "loop")],
)  # fmt: skip
def test_each_rig_option_a_setting_stands_in_for_names_it_and_its_default(option, key):
    """Left out, ``--seed``, ``--duration``, ``--loop`` ... take ``[rig]``'s settings: the help
    showed no default for them, so ``corticast rig`` looping a 60 s session forever was a
    surprise. Each now names its setting and the default, as ``--source-id`` names its own."""
    from service.config import RigSettings

    (param,) = [p for p in _commands()["rig"].params if p.name == option]
    assert param.default is None  # left out, the setting decides
    shown = _as_help_shows(getattr(RigSettings(), key))
    assert f"(default: [rig] {key}, {shown})" in " ".join(param.help.split())

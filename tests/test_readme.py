"""The README as a newcomer follows it: every ``corticast`` command it shows exists and takes
the options it shows, every path it names is in the repository, every ``[section] key`` it names
is a setting documented in the example config, and its map of the packages keeps the layer
contract's order. Cheap: nothing is run but the command line's parser."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
import typer

from service.cli.app import app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEPLOY_README = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")

_FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
_INVOCATION = re.compile(
    r"(?:^|[\s/])corticast((?:\s*\|\s*--?[a-z][a-z-]*|\s+[a-z][a-z-]*)"
    r"(?:\s*\|\s*(?:--)?[a-z][a-z-]*)*)(.*)"
)
_FLAG = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")
_REPO_PATH = re.compile(
    r"(?<![\w./-])((?:service|bench|models|deploy|firmware_bridge|tests)/[\w./-]*)"
)


def _code(text: str) -> list[str]:
    """The README's code: each fenced line (``\\`` continuations joined) and each inline span,
    with the fenced blocks' ``#`` comments dropped and the Commands block's description column
    (after three or more spaces) cut off."""
    snippets = []
    fenced = _FENCED.findall(text)
    for block in fenced:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            snippets.append(re.split(r"\s#\s|\s{3,}", line.strip(), maxsplit=1)[0])
    without_blocks = _FENCED.sub("", text)
    snippets += [span.replace("\n", " ") for span in _INLINE.findall(without_blocks)]
    return snippets


def _invocations(text: str) -> list[tuple[list[str], list[str], str]]:
    """(commands, flags, snippet) for each ``corticast ...`` in the code: ``a | b`` names two
    commands, a ``--flag`` among them is the program's own option."""
    found = []
    for snippet in _code(text):
        match = _INVOCATION.search(snippet)
        if match is None or re.search(r"(?<![\w-])-[a-z]\s+corticast$", snippet[: match.start(1)]):
            continue  # not a command: a short option's argument (install -g corticast ...)
        names = [name.strip() for name in match.group(1).split("|")]
        found.append((names, _FLAG.findall(match.group(2)), snippet))
    return found


def _group() -> click.Group:
    return typer.main.get_command(app)


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_the_readme_shows_commands_in_the_places_it_should():
    """The parsing below finds something: the Commands block and the replay examples."""
    shown = {name for names, _, _ in _invocations(README) for name in names}
    assert {"demo", "serve", "replay", "synth", "doctor", "train", "adapt", "--version"} <= shown


def test_the_commands_block_lists_every_command():
    """A newcomer reads the Commands block for what there is: a new command left out of it is
    found only by ``corticast --help``."""
    block = README.split("## Commands", 1)[1].split("```", 2)[1]
    listed = {name for names, _, _ in _invocations(f"```{block}```\n") for name in names}
    assert set(_group().commands) <= listed, set(_group().commands) - listed


@pytest.mark.parametrize("source", ["README.md", "deploy/README.md"])
def test_every_command_a_readme_shows_exists_and_takes_the_options_it_shows(source):
    text = README if source == "README.md" else DEPLOY_README
    group = _group()
    problems = []
    for names, flags, snippet in _invocations(text):
        for name in names:
            if name.startswith("-"):
                if name not in _options(group):
                    problems.append(f"{snippet!r}: corticast has no option {name}")
                continue
            command = group.commands.get(name)
            if command is None:
                problems.append(f"{snippet!r}: no command 'corticast {name}'")
                continue
            if len(names) == 1:
                missing = [flag for flag in flags if flag not in _options(command)]
                problems += [f"{snippet!r}: 'corticast {name}' has no {flag}" for flag in missing]
    assert not problems, "\n".join(problems)


def test_every_repository_path_the_readme_names_exists():
    named = {
        path.rstrip(".,")
        for snippet in _code(README)
        for path in _REPO_PATH.findall(snippet)
        if not re.search(r"[A-Z]{3,}", path)  # placeholders: tests/PATH
    }
    assert len(named) > 20
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README.md names paths that are not in the repository: {missing}"


def test_every_path_in_deploys_what_is_here_table_exists():
    table = DEPLOY_README.split("What is here", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `([^`]+)`(?:, `([^`]+)`)?", table, re.M)
    paths = [path for pair in named for path in pair if path]
    assert len(paths) > 8
    missing = [path for path in paths if not (ROOT / "deploy" / path).exists()]
    assert not missing, f"deploy/README.md names files that are not in deploy/: {missing}"


@pytest.mark.parametrize("source", ["README.md", "deploy/README.md"])
def test_every_setting_the_readme_names_exists_and_the_example_config_documents_it(source):
    """Each ``[section] key`` the text names, and each ``CORTICAST_SECTION__KEY`` override."""
    text = README if source == "README.md" else DEPLOY_README
    settings = Settings()
    example = (ROOT / "deploy" / "corticast.example.toml").read_text(encoding="utf-8")
    documented = tomllib.loads(example)
    named = set(re.findall(r"`?\[([a-z_]+)\]\s+`?([a-z_0-9]+)`", text))
    named |= {(section, "") for section in re.findall(r"`\[([a-z_]+)\]", text)}
    overrides = re.findall(r"CORTICAST_([A-Z]+)__([A-Z_]*[A-Z])", text)
    named |= {(section.lower(), key.lower()) for section, key in overrides}
    assert len(named) > 20 and overrides
    problems = []
    for section, key in sorted(named):
        if not hasattr(settings, section):
            problems.append(f"[{section}] is not a config section")
        elif key and not hasattr(getattr(settings, section), key):
            problems.append(f"[{section}] {key} is not a setting")
        elif key and key not in documented.get(section, {}):
            # From the section's header line: its name is in comments above it too.
            after = re.split(rf"^\[{section}\]", example, maxsplit=1, flags=re.M)[1]
            block = after.split("\n[", 1)[0]
            if not re.search(rf"^#\s*{key}\s*=", block, re.M):
                problems.append(f"[{section}] {key} is not in deploy/corticast.example.toml")
    assert not problems, "\n".join(problems)


def test_the_package_map_follows_the_layer_contract_lowest_first():
    """The "Where things are" map lists service's packages in the order the layers contract stacks
    them, lowest (service/core) first, and says so the right way round."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = pyproject["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    rank = {
        name.strip().removeprefix("service."): depth
        for depth, layer in enumerate(reversed(layers))
        for name in layer.split("|")
    }
    where = README.split("## Where things are", 1)[1]
    listed = re.findall(r"^service/(\w+)(?:/|\.py)", where, re.M)
    assert set(listed) == set(rank), "the map and the contract name different packages"
    assert [rank[name] for name in listed] == sorted(rank[name] for name in listed)
    assert "imports only those listed above it" in " ".join(where.split())


def test_the_package_map_names_each_config_section_where_its_settings_are_defined():
    """A newcomer looking for ``[api]``'s keys opens the package the map names beside it."""
    block = README.split("## Where things are", 1)[1].split("```", 2)[1]
    entries = re.findall(r"^(\S+)\s+(.*(?:\n {10,}.*)*)", block, re.M)
    named = {
        section: path for path, text in entries for section in re.findall(r"\[([a-z_]+)\]", text)
    }
    settings = Settings()
    defined = {
        section: type(getattr(settings, section)).__module__
        for section in type(settings).model_fields
    }
    assert set(named) == set(defined), "the map and the Settings root name different sections"
    wrong = {
        section: (path, defined[section])
        for section, path in named.items()
        if not (defined[section] + ".").startswith(
            path.removesuffix(".py").rstrip("/").replace("/", ".") + "."
        )
    }
    assert not wrong, f"sections the map puts beside a package that does not define them: {wrong}"


def test_every_endpoint_the_readmes_name_is_served_and_the_readme_names_every_one():
    """The paths an operator would curl, against the app's own routes (built around no daemon:
    routes only, nothing is served)."""
    from service.api.app import create_app
    from service.config import ApiSettings

    app = create_app(None, ApiSettings(token="t" * 32))
    served = set(app.openapi()["paths"])
    pages = {getattr(route, "path", None) for route in app.routes}  # /docs, /redoc
    endpoint = re.compile(
        r"`(?:(?:GET|PUT|POST) )?"
        r"(/(?:healthz|readyz|status|metrics|docs|redoc|predictions|control)[a-z/_]*)`"
    )
    named = {"README.md": set(endpoint.findall(README))}
    named["deploy/README.md"] = set(endpoint.findall(DEPLOY_README))
    unserved = sorted((source, path) for source in named for path in named[source] - served - pages)
    assert not unserved, f"named but not served: {unserved}"
    assert served <= named["README.md"], f"not in README.md: {served - named['README.md']}"

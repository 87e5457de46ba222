"""``edgeloop rules ...``: the alert rules (YAML/JSON documents) of a running platform; ``rules check`` works
offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api, request
from edgeloop.cli.output import fail, out
from edgeloop.errors import ConfigError

__all__ = ["rules_app"]

rules_app = typer.Typer(no_args_is_help=True, help="Alert rules (YAML/JSON documents) of a running platform.")


@rules_app.command("show")
def rules_show(url: Url = DEFAULT_URL) -> None:
    """The rule document in force, as given."""
    doc = api("GET", url, "/api/v1/alert-rules")
    out.print(f"# version {doc['version']} ({len(doc['rules'])} rules)")
    out.print(doc["text"], markup=False, highlight=False)


@rules_app.command("check")
def rules_check(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Check a rule document offline: the first problem with its line, or a summary."""
    from edgeloop.alerts.rule_config import load_rules

    try:
        ruleset = load_rules(file)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    kinds: dict[str, int] = {}
    for r in ruleset.rules:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    out.print(f"{file}: {len(ruleset.rules)} rules OK ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")


@rules_app.command("set")
def rules_set(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)], url: Url = DEFAULT_URL) -> None:
    """Replace the rules of a running platform (operator); it checks them first and changes nothing on error."""
    resp = request("PUT", url, "/api/v1/alert-rules", content=file.read_bytes(), content_type="application/yaml")
    doc = resp.json()
    out.print(f"rules version {doc['version']} in force ({doc['rules']} rules)")



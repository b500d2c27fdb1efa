"""``ledger estimate``: a pre-flight check of one request."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import LedgerUnavailable
from ..money import money_str, to_units
from ..render import json as render_json
from ..render import table as render_table
from .options import CliState, format_option, pass_state, stdout_text


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{source} is not valid JSON: {exc}",
                                 param_hint="--messages") from None


def _body_from(data: Any, source: str) -> dict[str, Any]:
    if isinstance(data, list):
        return {"messages": data}
    if isinstance(data, dict):
        return dict(data)
    raise click.BadParameter(f"{source} must hold a JSON request body (an object) or a list "
                             f"of messages, not {type(data).__name__}", param_hint="--messages")


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "standard input"
    return Path(path).expanduser().read_text(encoding="utf-8"), path


@click.command()
@click.option("--model", "-m", metavar="MODEL",
              help="The model (required unless the request body names one).")
@click.option("--prompt", "-p", metavar="TEXT", help="The prompt, as one user message.")
@click.option("--messages", metavar="FILE",
              help="A JSON file ('-' for stdin): a request body or a list of messages.")
@click.option("--max-tokens", type=click.IntRange(min=0), metavar="N",
              help="The completion cap (default: the request's own, else the ledger's default).")
@click.option("--project", metavar="P",
              help="Check against P's budget: exit 0 if the call fits what is left, 1 if not.")
@click.option("--shape", type=click.Choice(["openai", "anthropic"]), default="openai",
              show_default=True, help="The request's API shape.")
@format_option("table", "json")
@pass_state
def estimate(state: CliState, model: str | None, prompt: str | None, messages: str | None,
             max_tokens: int | None, project: str | None, shape: str, fmt: str) -> None:
    """Estimate a request before sending it: prompt tokens, completion cap, worst-case cost,
    and with --project whether it fits what is left of the project's budget.

    The request comes from --prompt TEXT, --messages FILE (a JSON request body or a list of
    messages), or standard input (JSON as for --messages, otherwise the prompt text). "Fits"
    means the worst case is within the remaining budget (limit - spent - reserved); a project
    without a budget always fits. Exit code: 0 fits, 1 does not.

    \b
    Example:
      ledger estimate --model kimi-k2.5 --prompt "Summarise this contract" --max-tokens 500
      ledger estimate --model kimi-k2.5 --messages request.json --project acme
      echo "Hello" | ledger estimate --model kimi-k2.5 --format json
    """
    if prompt is not None and messages is not None:
        raise click.UsageError("give --prompt or --messages, not both")
    if prompt is not None:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    elif messages is not None:
        text, source = _read(messages)
        body = _body_from(_load_json(text, source), source)
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
        stripped = text.strip()
        if stripped[:1] in ("{", "["):
            body = _body_from(_load_json(stripped, "standard input"), "standard input")
        elif stripped:
            body = {"messages": [{"role": "user", "content": text}]}
        else:
            raise click.UsageError("standard input is empty: give --prompt TEXT or "
                                   "--messages FILE")
    else:
        raise click.UsageError("give --prompt TEXT, --messages FILE, or the prompt on stdin")
    if model is not None:
        body["model"] = model
    elif not isinstance(body.get("model"), str):
        raise click.UsageError("give --model MODEL (the request body names none)")
    if max_tokens is not None:
        body.pop("max_completion_tokens", None)
        body["max_tokens"] = max_tokens
    book = state.open()
    est = book.estimate(body, shape=shape)
    budget_state = fits = None
    if project is not None:
        with contextlib.suppress(LedgerUnavailable):  # a read-only ledger still answers
            book.expire_holds()  # holds of dead processes no longer count against it
        budget_state = book.budget(project)
        remaining = budget_state.remaining
        fits = remaining is None or est.cost <= remaining
    out = stdout_text()
    if fmt == "json":
        data: dict[str, Any] = {
            "model": est.model, "prompt_tokens": est.prompt_tokens,
            "max_completion_tokens": est.max_completion_tokens,
            "capped_by_default": est.capped_by_default, "cost": money_str(est.cost),
            "input_per_1k": money_str(est.price.input_per_1k),
            "output_per_1k": money_str(est.price.output_per_1k),
        }
        if budget_state is not None:
            s = budget_state
            data.update({
                "project": s.project,
                "budget": "none" if s.limit is None else ("hard" if s.hard else "soft"),
                "limit": None if s.limit is None else money_str(s.limit),
                "spent": money_str(s.spent), "reserved": money_str(s.held),
                "remaining": None if s.remaining is None else money_str(s.remaining),
                "fits": fits, "would_be_refused": not s.fits(to_units(est.cost)),
            })
        render_json.write(data, out)
    else:
        render_table.console(out).print(render_table.estimate(est, budget_state, fits))
    if fits is False:
        click.get_current_context().exit(1)

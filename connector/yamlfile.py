"""Load a YAML file that people edit by hand, and explain every mistake with file, line and key.

Config and mapping files both come through here, so a CRM admin sees the same kind of message
whichever file they got wrong: `mappings/hubspot.yaml:12: fields.phone.transforms[0]: unknown
transform 'e146', did you mean 'e164'?`
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from connector.errors import ConfigError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=pydantic.BaseModel)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_KEYS = frozenset({
    "secret", "secrets", "password", "token", "api_key", "access_token", "client_secret",
    "security_token", "private_key", "consumer_secret", "session_id", "bearer_token", "signing_secret",
    "authorization", "x-api-key", "api-key", "metrics_token",
})


def key_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f", did you mean '{close[0]}'?" if close else ""


class YamlDocument:
    """Parsed YAML plus where each key stood, so any later check can point at a line."""

    def __init__(self, path: Path, data: Any, lines: dict[Loc, int]):
        self.path, self.data, self.lines = path, data, lines
        # Which environment variables `interpolate` put at each key, so a check can name the variable
        # (never its value): "the secret in LEADITIO_WEBHOOK_SECRET ends with whitespace".
        self.variables: dict[Loc, list[str]] = {}

    def line_of(self, loc: Loc) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(message, file=str(self.path), line=self.line_of(loc), key=key_path(loc) or None)


def _walk(path: Path, node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(key_node, yaml.ScalarNode) \
                else _scalar(key_node)
            if key in out:  # YAML keeps the last silently: a second `routes:` block dropped the first
                raise ConfigError(f"duplicate key (first written at line {lines[(*loc, key)]}); "
                                  "write it once", file=str(path), line=key_node.start_mark.line + 1,
                                  key=key_path((*loc, key)))
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _walk(path, value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(path, item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader(yaml.serialize(node)).get_single_data() if node.tag != "tag:yaml.org,2002:str" \
        else node.value


def load_yaml(path: str | Path) -> YamlDocument:
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be read): save the file "
                          "as UTF-8", file=str(path), line=raw.count(b"\n", 0, exc.start) + 1) from None
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"not valid YAML: {exc.problem or exc.context}",
                          file=str(path), line=mark.line + 1 if mark else None) from None
    lines: dict[Loc, int] = {}
    data = _walk(path, node, (), lines) if node is not None else {}
    return YamlDocument(path, data, lines)


def interpolate(doc: YamlDocument, env: typing.Mapping[str, str] | None = None) -> None:
    """Replace `${VAR}` / `${VAR:-default}` in place; secrets must be written as `${VAR}`."""
    env = os.environ if env is None else env

    def fix(value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            return {k: fix(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v, (*loc, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            if _is_secret(loc) and value is not None:
                raise doc.error(loc, "secrets must come from environment variables: write ${SOME_VAR}")
            return value
        if _is_secret(loc) and value and not _VAR.fullmatch(value.strip()):
            raise doc.error(loc, "secrets must come from environment variables, not be written in the "
                                 "file: write ${SOME_VAR} and set SOME_VAR")

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            doc.variables.setdefault(loc, []).append(name)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise doc.error(loc, f"environment variable {name} is not set (write ${{{name}:-default}} "
                                 "to give a default)")

        return _VAR.sub(sub, value)

    doc.data = fix(doc.data, ())


def _is_secret(loc: Loc) -> bool:
    # alerts.urls: an Apprise URL carries its channel's credential (a Slack webhook path, a password)
    return any(is_secret_key(part) for part in loc) or loc[:2] == ("alerts", "urls")


def is_secret_key(key: Any) -> bool:
    """Whether a value under this key is a secret (it must come from the environment, and is redacted)."""
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def validate(doc: YamlDocument, model: type[M], *, data: Any = None, loc_prefix: Loc = ()) -> M:
    """Validate with a pydantic model; the first problems come back as one ConfigError per line."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except pydantic.ValidationError as exc:
        raise explain(doc, model, exc, loc_prefix) from None


def explain(doc: YamlDocument, model: type[pydantic.BaseModel], exc: pydantic.ValidationError,
            loc_prefix: Loc = ()) -> ConfigError:
    messages = []
    first_loc: Loc | None = None
    for err in exc.errors()[:10]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc = _drop_union_tags(loc)
        full = (*loc_prefix, *loc)
        first_loc = first_loc or full
        messages.append(f"{doc.path}:{doc.line_of(full) or '?'}: {key_path(full)}: {_say(model, loc, err)}")
    error = doc.error(first_loc or (), "; ".join(messages))
    error.args = ("\n".join(messages),)
    return error


def _drop_union_tags(loc: Loc) -> Loc:
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"str", "int", "list"})))


def _say(model: type[pydantic.BaseModel], loc: Loc, err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed)
        listing = f" (allowed: {', '.join(sorted(allowed))})" if allowed and not hint else ""
        return f"unknown key '{loc[-1]}'{hint}{listing}"
    if kind == "missing":
        return "is required but missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg} (got {got!r})"
    return msg


def _allowed_keys(model: Any, loc: Loc) -> list[str]:
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, pydantic.BaseModel):
                return inner
    return tp


def _step(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        for name, field in tp.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, tuple) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None

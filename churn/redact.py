"""Secrets never leave the process: config values marked secret are redacted in artifacts and logs.

A config field is secret when it is declared with ``Field(..., json_schema_extra={"secret": True})``
(today: ``scoring.pseudonymize_key``). :func:`redacted_dump` is the config as a dict with every secret
replaced by :data:`REDACTED`; :func:`redact_text` replaces the secret values inside any text (a copy of
the YAML file, a log line, an error message). :func:`load_config <churn.config.load_config>` registers the
loaded secrets so :class:`RedactingFilter` (installed on the CLI's log handlers) can scrub every record.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

REDACTED = "<redacted>"
_KNOWN: set[str] = set()  # secret values of the configs loaded in this process


def _is_secret(model: BaseModel, name: str) -> bool:
    extra = type(model).model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


def _walk(value: Any) -> Any:
    """``value`` dumped like ``model_dump``, with secret fields replaced."""
    if isinstance(value, BaseModel):
        return {name: (REDACTED if _is_secret(value, name) and getattr(value, name) is not None
                       else _walk(getattr(value, name))) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v) for v in value]
    return value


def redacted_dump(cfg: BaseModel) -> dict[str, Any]:
    """The config as a plain dict, secret values replaced by :data:`REDACTED`."""
    return _walk(cfg)


def secret_values(value: Any) -> set[str]:
    """Every non-empty secret string in a config."""
    found: set[str] = set()
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            v = getattr(value, name)
            if _is_secret(value, name) and v not in (None, ""):
                found.add(str(v))
            else:
                found |= secret_values(v)
    elif isinstance(value, dict):
        for v in value.values():
            found |= secret_values(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found |= secret_values(v)
    return found


def register(cfg: BaseModel) -> None:
    """Remember the config's secrets so log records and error messages of this process are scrubbed."""
    _KNOWN.update(secret_values(cfg))


def redact_text(text: str, cfg: BaseModel | None = None) -> str:
    """``text`` with every secret of ``cfg`` (and every registered secret) replaced by :data:`REDACTED`."""
    values = _KNOWN | (secret_values(cfg) if cfg is not None else set())
    for v in sorted(values, key=len, reverse=True):  # longest first: a secret inside another stays hidden
        text = text.replace(v, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that replaces registered secret values in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _KNOWN:
            msg = record.getMessage()
            clean = redact_text(msg)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True

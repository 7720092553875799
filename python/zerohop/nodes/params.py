"""The base of the speech nodes' parameter models: remotemedia's snake_case names, and
the camelCase spelling JavaScript clients send, both accepted; unknown names rejected
(a typo in a manifest is an error naming the field, not a silently ignored setting).

Examples
--------
>>> from zerohop.nodes.params import NodeParams
>>> class Gate(NodeParams):
...     min_silence_duration_ms: int = 100
>>> Gate.model_validate({"minSilenceDurationMs": 300}).min_silence_duration_ms
300
>>> Gate.model_validate({"min_silence_ms": 300})
Traceback (most recent call last):
    ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Gate
min_silence_ms
  Extra inputs are not permitted ...
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

__all__ = ["NodeParams"]


def _either(name: str) -> AliasChoices:
    return AliasChoices(name, to_camel(name))


class NodeParams(BaseModel):
    """Params model accepting ``min_silence_duration_ms`` and ``minSilenceDurationMs``."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=_either),
        populate_by_name=True,
        extra="forbid",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_spelling_each(cls, data: Any) -> Any:
        """A field given under two of its spellings is an error, not a silent pick."""
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                alias = info.validation_alias
                if isinstance(alias, AliasChoices):
                    spellings = dict.fromkeys(c for c in alias.choices if isinstance(c, str))
                    given = [c for c in spellings if c in data]
                    if len(given) > 1:
                        raise ValueError(
                            f"{name} is given more than once, as {' and '.join(given)}"
                        )
        return data

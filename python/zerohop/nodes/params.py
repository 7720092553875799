"""The base of the speech nodes' parameter models: remotemedia's snake_case names, and
the camelCase spelling JavaScript clients send, both accepted; unknown names rejected
(a typo in a manifest is an error naming the field, not a silently ignored setting)."""

from __future__ import annotations

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict
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

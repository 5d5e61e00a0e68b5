"""What every capability's config shares when it is saved: a version, checked when read back.

Configs are small frozen dataclasses (``RecycleConfig``, ``CacheConfig``, the optimize configs …) that
validate themselves in ``__post_init__`` and raise a :class:`~ember.errors.ConfigError` subclass. Each has a
class attribute ``VERSION``, bumped when a saved config's meaning changes; ``to_dict`` writes it and
``from_dict`` refuses a config saved under another version (as torchao's configs do) instead of reading its
fields with a meaning they no longer have.
"""

from __future__ import annotations

from collections.abc import Mapping

from ember.errors import ConfigError


def check_version(cls: type, saved: Mapping) -> dict:
    """The fields of ``saved`` (a config dict written by ``cls.to_dict``), without its ``version``; raises
    :class:`ConfigError` when it was saved by another version of the config.

    A dict without a version was saved before versions were recorded: it is read as version 1.

    Example:
        >>> from ember.recycle import RecycleConfig
        >>> check_version(RecycleConfig, {"layer": 3, "version": 1})
        {'layer': 3}
    """
    fields = dict(saved)
    version = fields.pop("version", 1)
    want = getattr(cls, "VERSION", 1)
    if version != want:
        raise ConfigError(
            f"this {cls.__name__} was saved as version {version!r}, but this ember reads version {want}; its "
            f"settings may mean something else now. Recreate it ({cls.__name__}(...)) and save it again."
        )
    return fields

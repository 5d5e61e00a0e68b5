"""Saved optimize configs carry their version, as RecycleConfig and CacheConfig do (ember.config)."""

from __future__ import annotations

import pytest

from ember.errors import ConfigError
from ember.optimize import BF16Config, config_from_dict


def test_a_saved_config_records_its_version_and_reads_back():
    d = BF16Config().to_dict()
    assert d["version"] == BF16Config.VERSION
    assert config_from_dict(d) == BF16Config()
    del d["version"]  # saved before versions were recorded: read as version 1
    assert config_from_dict(d) == BF16Config()


def test_a_config_saved_by_another_version_is_refused_with_the_fix():
    d = {**BF16Config().to_dict(), "version": BF16Config.VERSION + 1}
    with pytest.raises(ConfigError, match=r"saved as version 2, but this ember reads version 1.*Recreate it"):
        config_from_dict(d)

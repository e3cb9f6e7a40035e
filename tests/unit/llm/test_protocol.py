"""Wire models and LLMConfig validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adept.config.base import load_config
from adept.config.llm import LLMConfig
from adept.errors import ConfigError
from services.llm.protocol import GenerateRequest


def test_request_needs_exactly_one_of_messages_or_prompt():
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest(prompt="x", messages=[{"role": "user", "content": "y"}])
    with pytest.raises(ValidationError):
        GenerateRequest(prompt="x", stop=[""])
    with pytest.raises(ValidationError):
        GenerateRequest(messages=[{"role": "robot", "content": "y"}])
    assert GenerateRequest(prompt="x").request_id


def test_llm_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(
            LLMConfig, overrides=["max_batch_size=0", "max_adapters_per_replica=0", "typo=1"], env=False
        )
    text = str(err.value)
    assert "max_batch_size" in text and "max_adapters_per_replica" in text and "typo" in text
    with pytest.raises(ConfigError, match="default_max_tokens"):
        load_config(LLMConfig, overrides=["default_max_tokens=100", "max_tokens_limit=50"], env=False)
    with pytest.raises(ConfigError, match="max_model_len"):
        load_config(LLMConfig, overrides=["max_model_len=512", "max_tokens_limit=512"], env=False)
    assert all(f.description for f in LLMConfig.model_fields.values())

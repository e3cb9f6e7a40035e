"""Typed configuration: one module per concept. See ``adept.config.base`` for loading rules."""

from adept.config.adapter import AdapterManifest, check_adapter_name
from adept.config.base import ConfigError, StoredModel, StrictModel, load_config, validate
from adept.config.platform import BUNDLED_EMBEDDING, BUNDLED_MODEL, PHI3_MINI, PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec, check_tenant_name

__all__ = [
    "BUNDLED_EMBEDDING",
    "BUNDLED_MODEL",
    "PHI3_MINI",
    "AdapterManifest",
    "ConfigError",
    "PlatformConfig",
    "StoredModel",
    "StrictModel",
    "TenantQuotas",
    "TenantSpec",
    "check_adapter_name",
    "check_tenant_name",
    "load_config",
    "validate",
]

"""What ``xds-server serve`` was asked to do: its flags and ``XDS_SERVER_*`` variables, typed.

``serve``: addresses, registry, store, logging, pacing, Consul; ``security``: admin tokens
and TLS on the ADS port. The command line parses the flags; the wiring (``app.py``) reads
only these types.
"""

from xds_server.settings.security import (
    VERIFY_MODES,
    SecuritySettings,
    ads_exposure_warning,
    check_admin_exposure,
    is_loopback,
)
from xds_server.settings.serve import (
    DEFAULT_DATABASE,
    DEFAULT_STORE,
    ENV_PREFIX,
    Address,
    Settings,
    SettingsError,
    check_store,
    settings_from,
)

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_STORE",
    "ENV_PREFIX",
    "VERIFY_MODES",
    "Address",
    "SecuritySettings",
    "Settings",
    "SettingsError",
    "ads_exposure_warning",
    "check_admin_exposure",
    "check_store",
    "is_loopback",
    "settings_from",
]

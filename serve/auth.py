"""API-key authentication of the Serve apps and the rule on where they may listen without one.

Owns reading the key from the environment (never from a config file), comparing it in constant time, and
refusing a non-loopback HTTP host when no key is configured. Never logs or returns the key.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from market.errors import ConfigError, RayscalpError

#: The header a client sends its key in.
API_KEY_HEADER = "X-API-Key"
#: The environment variable the key is read from unless the config names another.
DEFAULT_API_KEY_ENV = "RAYSCALP_API_KEY"
#: A shorter key is refused: it could be guessed.
MIN_KEY_LENGTH = 16


class AuthError(RayscalpError):
    """A request without the API key or with a wrong one (answered 401 with this message)."""


def is_loopback(host: str) -> bool:
    """Whether an HTTP server bound to ``host`` is reachable from this machine only.

    ``localhost`` and every loopback address (``127.0.0.0/8``, ``::1``) are; ``0.0.0.0``, ``::``, a LAN
    address or another name are not.
    """
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    """The key of one app (or none), read from the environment variable ``env_name``.

    With a key, every request but health must carry it in ``X-API-Key``; without one, the app may only be
    served on a loopback host (:func:`check_bind`).
    """

    env_name: str
    _key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env_name: str = DEFAULT_API_KEY_ENV, environ: Mapping[str, str] | None = None) -> ApiKeyAuth:
        """Read the key from ``environ[env_name]`` (``os.environ`` by default); unset or empty means no key.

        Raises
        ------
        ConfigError
            When the key is shorter than :data:`MIN_KEY_LENGTH` characters (its value is never shown).
        """
        environ = os.environ if environ is None else environ
        value = environ.get(env_name, "").strip()
        if not value:
            return cls(env_name)
        if len(value) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"API key in ${env_name} is {len(value)} characters; use at least {MIN_KEY_LENGTH} "
                "(for instance: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return cls(env_name, value.encode("utf-8"))

    @property
    def enabled(self) -> bool:
        """Whether a key is configured (and so required)."""
        return self._key is not None

    def check(self, presented: str | None) -> None:
        """Accept ``presented`` (the ``X-API-Key`` header, or ``None``) or raise :class:`AuthError`.

        Without a configured key everything passes. The comparison takes the same time wherever the
        presented key first differs (``hmac.compare_digest``).
        """
        if self._key is None:
            return
        if not presented:
            raise AuthError(f"missing API key: send it in the {API_KEY_HEADER} header")
        if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), self._key):
            raise AuthError(f"wrong API key in the {API_KEY_HEADER} header")


def check_bind(host: str, auth: ApiKeyAuth) -> None:
    """Refuse to serve on a non-loopback ``host`` without an API key.

    Raises
    ------
    ConfigError
        When ``host`` is reachable from other machines (``0.0.0.0``, ``::``, a LAN address) and ``auth``
        has no key; the message says how to fix it either way.
    """
    if auth.enabled or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on host {host!r} without an API key: set ${auth.env_name} (at least "
        f"{MIN_KEY_LENGTH} characters) on every node, or listen on 127.0.0.1 only"
    )

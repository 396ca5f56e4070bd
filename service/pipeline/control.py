"""Who may use the model control API (load, unload, index): one rule for every protocol.

Closed by default. A service started with no setting answers every control call 403 with a message
saying how to open it; the repository poller keeps loading new versions either way. It opens with:

- `MONOSERVE_ADMIN_TOKEN`: the caller sends `Authorization: Bearer <admin token>` (401 otherwise);
- `MONOSERVE_CONTROL_ACCEPTS_API_TOKEN=true`: the API token (`MONOSERVE_API_TOKEN`) unlocks it too
  (the operator's explicit choice; never implied by setting an API token);
- `MONOSERVE_UNSAFE_CONTROL_LOOPBACK=true`: no token, for callers whose address is loopback only,
  for a development machine. Unsafe anywhere else: anything on the host (another user, a container
  sharing the network namespace, a reverse proxy on localhost) reaches it.

`check_control_access(settings, authorization, peer_host)` is the rule; the REST routes
(service.edge.routes.repository) call it, and the gRPC repository RPCs call the same function with the
`authorization` metadata and `grpc_peer_host(context.peer())`, mapping its exceptions to gRPC status codes
(ForbiddenError -> PERMISSION_DENIED, UnauthorizedError -> UNAUTHENTICATED).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from service.base.errors import ForbiddenError, UnauthorizedError

CLOSED_MESSAGE = ("the model control API is off: set MONOSERVE_ADMIN_TOKEN and send 'Authorization: Bearer "
                  "<admin token>' (docs/service.md, 'Model control'); the repository poller keeps loading new versions")


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped); False for anything else, a name or nothing."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def grpc_peer_host(peer: str | None) -> str | None:
    """The host of a gRPC `context.peer()` ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000",
    "unix:/path"), for check_control_access; None for anything that is not an IP peer."""
    if not peer:
        return None
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        return rest.rpartition(":")[0] or None
    if scheme == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or None
    return None


def bearer_token(authorization: str | None, missing: str) -> bytes:
    """The token of an `Authorization: Bearer <token>` value (the scheme in any case, spaces around the
    token ignored): the one parser for the API token (service.pipeline.endpoint.check_authorization)
    and the admin token. 401 with the message `missing` when there is none."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError(missing, headers={"WWW-Authenticate": "Bearer"})
    return given.encode()


def _secret(value: Any) -> bytes | None:
    """A configured token's bytes; None when unset or empty (compose's `${MONOSERVE_ADMIN_TOKEN:-}`)."""
    if value is None:
        return None
    return value.get_secret_value().encode() or None


def control_is_open(settings: Any) -> bool:
    """Whether any setting opens the control API at all (for the startup log)."""
    return (_secret(settings.admin_token) is not None or settings.unsafe_control_loopback
            or (settings.control_accepts_api_token and _secret(settings.api_token) is not None))


def check_control_access(settings: Any, authorization: str | None, peer_host: str | None) -> None:
    """Raise unless this caller may use the model control API; return None when it may.

    `settings`: service.settings.Settings (admin_token, api_token, control_accepts_api_token,
    unsafe_control_loopback); `authorization`: the Authorization header (or gRPC metadata) value;
    `peer_host`: the client's address as the server saw it (never a forwarded header).
    Raises ForbiddenError (403: closed, or loopback-only and the caller is not on loopback) or
    UnauthorizedError (401: a token is configured and the caller's is missing or wrong).
    """
    tokens = [token for token in (_secret(settings.admin_token),
                                  _secret(settings.api_token) if settings.control_accepts_api_token else None)
              if token is not None]
    if tokens:
        given = bearer_token(authorization, "the model control API needs 'Authorization: Bearer <admin token>'")
        # every token compared (constant time each), so the time says nothing about which one is set
        if not any([hmac.compare_digest(given, token) for token in tokens]):
            raise UnauthorizedError("wrong admin token for the model control API", headers={"WWW-Authenticate": "Bearer"})
        return
    if settings.unsafe_control_loopback:
        if is_loopback(peer_host):
            return
        raise ForbiddenError("the model control API is open to loopback callers only "
                             "(MONOSERVE_UNSAFE_CONTROL_LOOPBACK); set MONOSERVE_ADMIN_TOKEN to use it from elsewhere")
    raise ForbiddenError(CLOSED_MESSAGE)

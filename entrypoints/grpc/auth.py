"""``authorization: Bearer <access token>`` metadata: the same tokens, and the same check, as the REST API."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import jwt
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from domain.ids import UserId

UNAUTHENTICATED = "a valid bearer token is required (authorization: Bearer <access token>)"


class BearerAuth:
    """Who a call's ``authorization`` metadata names; UNAUTHENTICATED when it names nobody.

    A token is checked (signature, issuer, audience, expiry: ``JwtTokenIssuer.verify``) once per
    process and then remembered until its ``exp``, as the REST API does: a client sends the same
    token with every call, and PyJWT's check costs about 0.1 ms of CPU.
    """

    def __init__(
        self, verify: Callable[[str], UserId | None], *, size: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._verify = verify
        self._size = size
        self._clock = clock
        self._known: OrderedDict[str, tuple[UserId, float]] = OrderedDict()

    def user(self, metadata: Mapping[str, str | bytes] | None) -> UserId:
        """The caller.

        Raises:
            GRPCError: UNAUTHENTICATED, for missing, malformed, invalid or expired credentials.
        """
        token = _bearer(metadata)
        if token is None:
            raise GRPCError(Status.UNAUTHENTICATED, UNAUTHENTICATED)
        known = self._known.get(token)
        if known is not None:
            user, expires = known
            if expires > self._clock():
                self._known.move_to_end(token)
                return user
            del self._known[token]
            raise GRPCError(Status.UNAUTHENTICATED, UNAUTHENTICATED)
        user_id = self._verify(token)
        if user_id is None:
            raise GRPCError(Status.UNAUTHENTICATED, UNAUTHENTICATED)
        self._remember(token, user_id)
        return user_id

    def _remember(self, token: str, user_id: UserId) -> None:
        try:  # verified above: only its expiry is read here
            exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        except (jwt.PyJWTError, KeyError):
            return
        if not isinstance(exp, int | float):
            return
        self._known[token] = (user_id, float(exp))
        if len(self._known) > self._size:
            self._known.popitem(last=False)


def _bearer(metadata: Mapping[str, str | bytes] | None) -> str | None:
    value = metadata.get("authorization") if metadata is not None else None
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None

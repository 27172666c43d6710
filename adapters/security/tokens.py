"""Short-lived JWT access tokens (HS256, with iss, aud, exp, iat and jti) and random secrets."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

import attrs
import jwt

from application.ports import AccessToken
from domain.ids import UserId


@attrs.frozen
class TokenSettings:
    """How access tokens are signed and for how long they live."""

    secret: str = attrs.field(repr=False)
    issuer: str = "chat4all"
    audience: str = "chat4all"
    ttl: timedelta = timedelta(hours=1)
    algorithm: str = "HS256"


class JwtTokenIssuer:
    """Issues and verifies access tokens."""

    def __init__(self, settings: TokenSettings) -> None:
        self.settings = settings

    def issue_access(self, user_id: UserId, *, at: datetime) -> AccessToken:
        s = self.settings
        claims = {
            "sub": str(user_id),
            "iss": s.issuer,
            "aud": s.audience,
            "iat": int(at.timestamp()),
            "exp": int((at + s.ttl).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return AccessToken(jwt.encode(claims, s.secret, algorithm=s.algorithm), int(s.ttl.total_seconds()))

    def verify(self, token: str) -> UserId | None:
        """The user a valid token names, or None for any invalid, expired or foreign token."""
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                s.secret,
                algorithms=[s.algorithm],
                audience=s.audience,
                issuer=s.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
            return UserId(uuid.UUID(claims["sub"]))
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            return None

    def new_secret(self) -> str:
        return secrets.token_urlsafe(32)

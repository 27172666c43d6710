"""Password hashing (Argon2id) and signed access tokens (JWT, HS256)."""

from adapters.security.passwords import Argon2PasswordHasher
from adapters.security.tokens import JwtTokenIssuer, TokenSettings

__all__ = ["Argon2PasswordHasher", "JwtTokenIssuer", "TokenSettings"]

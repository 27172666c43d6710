"""REST controllers: decode -> command -> bus -> encode, nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.security.jwt import Token
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from application import commands as c
from application.bus import MessageBus
from application.cursors import decode_history_cursor
from domain.conversations import ConversationType
from domain.ids import ConversationId, MessageId, UserId
from entrypoints.http import schemas as s
from entrypoints.tracing import trace_headers

Bus = NamedDependency[MessageBus]
AuthedRequest = Request[UserId, Token, Any]
PUBLIC = {"exclude_from_auth": True}
BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size")]


@dataclass
class _TokenOperation(Operation):
    """Documents that /auth/token takes JSON or an HTML form."""

    def __post_init__(self) -> None:
        from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Schema

        text = Schema(type=OpenAPIType.STRING, max_length=256)
        schema = Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "username": text,
                "password": text,
                "client_id": text,
                "client_secret": text,
                "grant_type": text,
            },
            description="username and password, or client_id and client_secret",
        )
        self.request_body = RequestBody(
            required=True,
            content={
                RequestEncodingType.JSON.value: OpenAPIMediaType(schema=schema),
                RequestEncodingType.URL_ENCODED.value: OpenAPIMediaType(schema=schema),
            },
        )


def client_address(request: Request[Any, Any, Any]) -> str | None:
    """The client's address, which the limits of calls without a token count by: the peer's, or, when the peer
    is a proxy of CHAT4ALL_FORWARDED_ALLOW_IPS, the address its X-Forwarded-For names (uvicorn rewrote it)."""
    return request.client.host if request.client is not None else None


async def _token_body(request: Request[Any, Any, Any]) -> s.TokenIn:
    try:
        if (request.content_type[0] or "").startswith(RequestEncodingType.URL_ENCODED.value):
            form = await request.form()
            return msgspec.convert({k: form.get(k) for k in form}, s.TokenIn)
        return msgspec.json.decode(await request.body(), type=s.TokenIn)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ValidationException(detail=str(e), extra=[{"key": "body", "message": str(e)}]) from None


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/token",
        opt=PUBLIC,
        status_code=HTTP_200_OK,
        operation_id="issueToken",
        operation_class=_TokenOperation,
    )
    async def token(self, request: Request[Any, Any, Any], bus: Bus) -> s.TokenOut:
        """Log in with username/password or client_id/client_secret (JSON or form)."""
        body = await _token_body(request)
        if body.client_id is not None or body.client_secret is not None:
            cmd: object = c.IssueTokenForClient(body.client_id or "", body.client_secret or "")
        elif body.username is not None and body.password is not None:
            cmd = c.IssueTokenForPassword(body.username, body.password)
        else:
            raise ValidationException(
                detail="give username and password, or client_id and client_secret",
                extra=[{"key": "body", "message": "missing credentials"}],
            )
        return s.token_out(await bus.handle(cmd, client=client_address(request)))

    @post("/refresh", opt=PUBLIC, status_code=HTTP_200_OK, operation_id="refreshToken")
    async def refresh(self, request: Request[Any, Any, Any], data: JSONBody[s.RefreshIn], bus: Bus) -> s.TokenOut:
        """Trade a refresh token, once, for a new pair."""
        return s.token_out(await bus.handle(c.RefreshToken(data.refresh_token), client=client_address(request)))


class UsersController(Controller):
    path = "/v1"
    tags = ["users"]

    @post("/users", opt=PUBLIC, operation_id="registerUser")
    async def register(self, request: Request[Any, Any, Any], data: JSONBody[s.RegisterUserIn], bus: Bus) -> s.UserOut:
        """Create an account."""
        cmd = c.RegisterUser(data.username, data.password, data.display_name)
        return s.user_out(await bus.handle(cmd, client=client_address(request)))

    @get("/me", operation_id="me", security=BEARER)
    async def me(self, request: AuthedRequest, bus: Bus) -> s.UserOut:
        """The caller."""
        return s.user_out(await bus.handle(c.GetUser(request.user)))

    @post("/clients", operation_id="createClient", security=BEARER)
    async def create_client(self, request: AuthedRequest, data: JSONBody[s.ClientIn], bus: Bus) -> s.ClientOut:
        """Create client credentials that act as the caller; the secret is shown once."""
        out = await bus.handle(c.CreateApiClient(request.user, data.name))
        return s.ClientOut(
            client_id=out.client_id, client_secret=out.client_secret, name=out.name, created_at=out.created_at
        )

    @post("/users/me/identities", operation_id="linkIdentity", security=BEARER)
    async def link(self, request: AuthedRequest, data: JSONBody[s.IdentityIn], bus: Bus) -> s.IdentityOut:
        """Link the caller's account on a platform."""
        return s.identity_out(await bus.handle(c.LinkIdentity(request.user, data.channel, data.external_id)))

    @get("/users/me/identities", operation_id="listIdentities", security=BEARER)
    async def identities(self, request: AuthedRequest, bus: Bus) -> s.IdentityList:
        """The caller's linked identities."""
        return s.IdentityList(items=[s.identity_out(i) for i in await bus.handle(c.ListIdentities(request.user))])

    @delete(
        "/users/me/identities/{channel:str}",
        operation_id="unlinkIdentity",
        security=BEARER,
        status_code=HTTP_204_NO_CONTENT,
    )
    async def unlink(self, request: AuthedRequest, channel: FromPath[str], bus: Bus) -> None:
        """Unlink the caller's account on a platform."""
        await bus.handle(c.UnlinkIdentity(request.user, channel))


class ConversationsController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]
    security = BEARER

    @post("/", operation_id="createConversation")
    async def create(self, request: AuthedRequest, data: JSONBody[s.ConversationIn], bus: Bus) -> s.ConversationOut:
        """Start a private or group conversation; the caller is always a member."""
        cmd = c.CreateConversation(request.user, ConversationType(data.type), data.members, data.metadata)
        return s.conversation_out(await bus.handle(cmd))

    @get("/", operation_id="listConversations")
    async def list_mine(
        self,
        request: AuthedRequest,
        bus: Bus,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> s.ConversationList:
        """The caller's conversations, most recent activity first."""
        page = await bus.handle(c.ListConversations(request.user, limit, cursor))
        return s.ConversationList(items=[s.conversation_out(x) for x in page.items], next_cursor=page.next_cursor)

    @get("/{conversation_id:uuid}", operation_id="getConversation")
    async def get_one(self, request: AuthedRequest, conversation_id: FromPath[UUID], bus: Bus) -> s.ConversationOut:
        """One of the caller's conversations."""
        return s.conversation_out(await bus.handle(c.GetConversation(request.user, ConversationId(conversation_id))))

    @get("/{conversation_id:uuid}/messages", operation_id="listMessages")
    async def history(
        self,
        request: AuthedRequest,
        conversation_id: FromPath[UUID],
        bus: Bus,
        limit: Limit = 50,
        after_seq: Annotated[int | None, QueryParameter(ge=0, le=2**62)] = None,
        before_seq: Annotated[int | None, QueryParameter(ge=1, le=2**62)] = None,
        since: Annotated[datetime | None, QueryParameter()] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> s.MessageList:
        """Messages in ascending seq; with no cursor the latest `limit`."""
        if cursor is not None:
            direction, seq = decode_history_cursor(cursor)
            after_seq, before_seq = (seq, None) if direction == "after" else (None, seq)
        cmd = c.GetHistory(request.user, ConversationId(conversation_id), limit, after_seq, before_seq, since)
        page = await bus.handle(cmd)
        return s.MessageList(items=[s.message_out(m) for m in page.items], next_cursor=page.next_cursor)


class MessagesController(Controller):
    path = "/v1/messages"
    tags = ["messages"]
    security = BEARER

    @post("/", status_code=HTTP_202_ACCEPTED, operation_id="sendMessage")
    async def send(self, request: AuthedRequest, data: JSONBody[s.MessageIn], bus: Bus) -> s.AcceptedOut:
        """Accept a message durably; `message_id` makes retries safe."""
        cmd = c.SendMessage(
            sender=request.user,
            conversation_id=ConversationId(data.conversation_id),
            payload=data.payload,
            message_id=MessageId(data.message_id) if data.message_id else None,
            from_=data.from_,
            to=data.to,
            channels=data.channels,
            metadata=data.metadata,
            trace=trace_headers(),
        )
        return s.accepted_out(await bus.handle(cmd))

    @get("/{message_id:uuid}", operation_id="getMessage")
    async def get_one(self, request: AuthedRequest, message_id: FromPath[UUID], bus: Bus) -> s.MessageOut:
        """One message as history shows it, for its sender and recipients."""
        return s.message_out(await bus.handle(c.GetMessage(request.user, MessageId(message_id))))

    @get("/{message_id:uuid}/status", operation_id="getMessageStatus")
    async def status(self, request: AuthedRequest, message_id: FromPath[UUID], bus: Bus) -> s.MessageStatusOut:
        """A message's deliveries and their history."""
        return s.status_out(await bus.handle(c.GetMessageStatus(request.user, MessageId(message_id))))

    @post("/{message_id:uuid}/read", status_code=HTTP_200_OK, operation_id="markRead")
    async def read(self, request: AuthedRequest, message_id: FromPath[UUID], bus: Bus) -> s.ReadOut:
        """Mark this message, and every earlier one in its conversation, read by the caller."""
        out = await bus.handle(c.MarkRead(request.user, MessageId(message_id)))
        return s.ReadOut(message_id=out.message_id, status=out.status, read_at=out.read_at)

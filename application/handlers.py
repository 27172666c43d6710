"""Use-case handlers: ``async def handle_<command>(cmd, deps)``, one per command or query."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from application import commands as c
from application import topics
from application import views as v
from application.accepting import Acceptance, accept_messages, message_event
from application.cursors import SyncPosition, decode_sync_cursor, encode_history_cursor, encode_sync_cursor
from application.errors import ApplicationError, AuthenticationFailed, Busy, Conflict, Forbidden, NotFound
from application.events import emit_conversation_created, emit_status, payload_of, status_event
from application.ports import (
    Clock,
    DuplicateMessage,
    HistoryQuery,
    IdGenerator,
    PageRequest,
    PasswordHasher,
    TokenIssuer,
    UnitOfWork,
    UrlPolicy,
)
from application.realtime import message_frame
from domain.channels import Channel, ChannelAddress, parse_channel
from domain.conversations import Conversation, Participant, ParticipantKind
from domain.deliveries import Delivery, DeliveryStatus, is_final, overall_status
from domain.errors import BusinessRuleViolation, check_json_value
from domain.ids import ClientId, ConversationId, FileId, MessageId, UserId
from domain.messages import Content, FileContent, FileInfo, Message, TextContent, plan_deliveries
from domain.uploads import UploadStatus
from domain.users import ApiClient, ChannelIdentity, User, is_username, validate_password, validate_username

MESSAGES_TOPIC = topics.MESSAGES
STATUS_TOPIC = topics.STATUS


@attrs.frozen
class Settings:
    """Tunables the use cases read."""

    group_max: int = Conversation.DEFAULT_GROUP_MAX
    refresh_ttl: timedelta = timedelta(days=30)
    history_max: int = 200
    list_max: int = 100
    sync_settle: timedelta = timedelta(seconds=5)
    """How long an accepting or status transaction may take to commit after it took its timestamp: a
    sync cursor never moves closer to now than this, so such a late commit is still found (and a
    client may see a change twice; every change is idempotent)."""


@attrs.frozen
class Deps:
    """Everything a handler may need, bound once at start-up."""

    uow: Callable[[], UnitOfWork]
    clock: Clock
    ids: IdGenerator
    hasher: PasswordHasher
    tokens: TokenIssuer
    settings: Settings = Settings()
    webhook_urls: UrlPolicy | None = None
    """Which URLs webhooks may be registered for; without it, none may."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- accounts and tokens -------------------------------------------------------------


async def handle_register_user(cmd: c.RegisterUser, d: Deps) -> v.UserView:
    """Create an account with an Argon2id-hashed password."""
    validate_username(cmd.username)
    validate_password(cmd.password)
    async with d.uow() as uow:
        if await uow.users.get_by_username(cmd.username) is not None:
            raise Conflict(f"username {cmd.username!r} is taken", field="username")
    # Hash outside any transaction: it is deliberately slow.
    password_hash = await d.hasher.hash(cmd.password)
    user = User.register(
        id=UserId(d.ids.new()),
        username=cmd.username,
        password_hash=password_hash,
        display_name=cmd.display_name,
        at=d.clock.now(),
    )
    async with d.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    return _user_view(user)


async def _issue_pair(uow: UnitOfWork, user_id: UserId, d: Deps) -> v.TokenPair:
    now = d.clock.now()
    access = d.tokens.issue_access(user_id, at=now)
    refresh = d.tokens.new_secret()
    await uow.refresh_tokens.add(_digest(refresh), user_id, expires_at=now + d.settings.refresh_ttl)
    await uow.commit()
    return v.TokenPair(access_token=access.token, expires_in=access.expires_in, refresh_token=refresh)


async def handle_issue_token_for_password(cmd: c.IssueTokenForPassword, d: Deps) -> v.TokenPair:
    """Log in with username and password."""
    user = None
    if is_username(cmd.username):
        async with d.uow() as uow:
            user = await uow.users.get_by_username(cmd.username)
    if user is None:
        # Spend what a verification costs, with the same parameters, so the response time does
        # not reveal which usernames exist.
        await d.hasher.hash(cmd.password)
        raise AuthenticationFailed("wrong username or password")
    if not await d.hasher.verify(user.password_hash, cmd.password):
        raise AuthenticationFailed("wrong username or password")
    async with d.uow() as uow:
        return await _issue_pair(uow, user.id, d)


async def handle_issue_token_for_client(cmd: c.IssueTokenForClient, d: Deps) -> v.TokenPair:
    """Log an application in with client credentials; it acts as the user who owns them."""
    client_id = c.as_uuid(cmd.client_id)
    async with d.uow() as uow:
        client = await uow.clients.get(ClientId(client_id)) if client_id is not None else None
        if client is None or not _constant_time_equal(client.secret_hash, _digest(cmd.client_secret)):
            raise AuthenticationFailed("wrong client_id or client_secret")
        return await _issue_pair(uow, client.owner_id, d)


def _constant_time_equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


async def handle_refresh_token(cmd: c.RefreshToken, d: Deps) -> v.TokenPair:
    """Use a refresh token once for a new pair."""
    async with d.uow() as uow:
        user_id = await uow.refresh_tokens.consume(_digest(cmd.refresh_token), at=d.clock.now())
        if user_id is None:
            raise AuthenticationFailed("refresh token is unknown, used or expired")
        return await _issue_pair(uow, user_id, d)


async def handle_create_api_client(cmd: c.CreateApiClient, d: Deps) -> v.ApiClientCreated:
    """Create client credentials owned by the caller."""
    name = cmd.name.strip()
    if not 1 <= len(name) <= 100:
        raise BusinessRuleViolation("a client name has 1-100 characters", field="name")
    check_json_value(name, field="name")
    secret = d.tokens.new_secret()
    client = ApiClient(
        id=ClientId(d.ids.new()), owner_id=cmd.owner, name=name, secret_hash=_digest(secret), created_at=d.clock.now()
    )
    async with d.uow() as uow:
        await uow.clients.add(client)
        await uow.commit()
    return v.ApiClientCreated(
        client_id=str(client.id), client_secret=secret, name=client.name, created_at=client.created_at
    )


async def handle_get_user(cmd: c.GetUser, d: Deps) -> v.UserView:
    """A user's public profile."""
    async with d.uow() as uow:
        user = await uow.users.get(cmd.user_id)
    if user is None:
        raise NotFound("no such user")
    return _user_view(user)


def _user_view(user: User) -> v.UserView:
    return v.UserView(
        user_id=user.id, username=user.username, display_name=user.display_name, created_at=user.created_at
    )


# --- identities ----------------------------------------------------------------------


def _identity_view(i: ChannelIdentity) -> v.IdentityView:
    return v.IdentityView(
        channel=i.channel.value, external_id=i.address.external_id, address=str(i.address), linked_at=i.linked_at
    )


async def handle_link_identity(cmd: c.LinkIdentity, d: Deps) -> v.IdentityView:
    """Link the caller's platform account."""
    address = ChannelAddress.of(cmd.channel, cmd.external_id)
    identity = ChannelIdentity(user_id=cmd.user_id, address=address, linked_at=d.clock.now())
    async with d.uow() as uow:
        await uow.identities.add(identity)
        await uow.commit()
    return _identity_view(identity)


async def handle_unlink_identity(cmd: c.UnlinkIdentity, d: Deps) -> None:
    """Unlink the caller's platform account."""
    channel = parse_channel(cmd.channel)
    async with d.uow() as uow:
        if not await uow.identities.remove(cmd.user_id, channel):
            raise NotFound(f"no {channel.value} identity is linked")
        await uow.commit()


async def handle_list_identities(cmd: c.ListIdentities, d: Deps) -> list[v.IdentityView]:
    """The caller's identities."""
    async with d.uow() as uow:
        return [_identity_view(i) for i in await uow.identities.list_for_user(cmd.user_id)]


# --- conversations -------------------------------------------------------------------


async def _resolve_member(uow: UnitOfWork, ref: str, *, field: str) -> Participant:
    """A username, user id or address as a participant; an unlinked address is a contact."""
    if ChannelAddress.looks_like_address(ref):
        address = ChannelAddress.parse(ref)
        identity = await uow.identities.find_by_address(address)
        return Participant.user(identity.user_id) if identity else Participant.contact(address)
    as_id = c.as_uuid(ref)
    if as_id is not None:
        user = await uow.users.get(UserId(as_id))
    else:
        user = await uow.users.get_by_username(ref) if is_username(ref) else None
    if user is None:
        raise BusinessRuleViolation(f"unknown member {ref!r}", field=field)
    return Participant.user(user.id)


async def _users_of(uow: UnitOfWork, people: Iterable[Participant]) -> Mapping[UserId, User]:
    """The users among ``people``, in one look-up."""
    return await uow.users.get_many(list({p.user_id for p in people if p.user_id is not None}))


def _member_view(m: Participant, users: Mapping[UserId, User]) -> v.MemberView:
    if m.kind is ParticipantKind.USER:
        assert m.user_id is not None
        u = users.get(m.user_id)
        return v.MemberView(kind="user", user_id=m.user_id, username=u.username if u else None)
    return v.MemberView(kind="contact", address=str(m.address))


def _conversation_view(
    conv: Conversation, users: Mapping[UserId, User], last_message: v.MessageView | None = None, unread: int = 0
) -> v.ConversationView:
    return v.ConversationView(
        conversation_id=conv.id,
        type=conv.type.value,
        members=[_member_view(m, users) for m in conv.members],
        metadata=conv.metadata,
        created_at=conv.created_at,
        last_activity_at=conv.last_activity_at,
        last_seq=conv.last_seq,
        last_message=last_message,
        unread_count=unread,
    )


async def _viewed_conversations(
    uow: UnitOfWork, viewer: UserId, conversations: Sequence[Conversation]
) -> list[v.ConversationView]:
    """The conversations as ``viewer`` sees them: each with its last message and unread count.

    Three queries however many conversations: the summaries, the users, the last messages' deliveries.
    Reading them changes no delivery (unlike history, which counts as fetching the messages).
    """
    summaries = await uow.messages.summaries(Participant.user(viewer), [conv.id for conv in conversations])
    last = [s.last_message for s in summaries.values() if s.last_message is not None]
    members = (m for conv in conversations for m in conv.members)
    users = await _users_of(uow, [*members, *(p for m in last for p in (m.sender, *m.recipients))])
    shown = {view.conversation_id: view for view in await _message_views(uow, last, users)}
    return [_conversation_view(conv, users, shown.get(conv.id), summaries[conv.id].unread) for conv in conversations]


async def handle_create_conversation(cmd: c.CreateConversation, d: Deps) -> v.ConversationView:
    """Start a conversation between the caller and the named members."""
    async with d.uow() as uow:
        others = [await _resolve_member(uow, ref, field="members") for ref in cmd.members]
        conv = Conversation.start(
            id=ConversationId(d.ids.new()),
            type=cmd.type,
            creator=cmd.creator,
            others=others,
            metadata=cmd.metadata,
            at=d.clock.now(),
            group_max=d.settings.group_max,
        )
        await uow.conversations.add(conv)
        await emit_conversation_created(uow.outbox, conv)
        view = _conversation_view(conv, await _users_of(uow, conv.members))
        await uow.commit()
    return view


async def _member_conversation(uow: UnitOfWork, conversation_id: ConversationId, viewer: UserId) -> Conversation:
    conv = await uow.conversations.get(conversation_id)
    if conv is None:
        raise NotFound("no such conversation")
    if not conv.has_member(Participant.user(viewer)):
        raise Forbidden("you are not a member of this conversation")
    return conv


async def handle_get_conversation(cmd: c.GetConversation, d: Deps) -> v.ConversationView:
    """One of the caller's conversations."""
    async with d.uow() as uow:
        conv = await _member_conversation(uow, cmd.conversation_id, cmd.viewer)
        (view,) = await _viewed_conversations(uow, cmd.viewer, [conv])
    return view


async def handle_list_conversations(cmd: c.ListConversations, d: Deps) -> v.ConversationListView:
    """The caller's conversations, most recent activity first."""
    limit = bounded(cmd.limit, d.settings.list_max, field="limit")
    async with d.uow() as uow:
        page = await uow.conversations.list_for(Participant.user(cmd.viewer), PageRequest(limit, cmd.cursor))
        items = await _viewed_conversations(uow, cmd.viewer, page.items)
    return v.ConversationListView(items=items, next_cursor=page.next_cursor)


def bounded(value: int, most: int, *, field: str) -> int:
    """``value`` if it is between 1 and ``most``, else a violation of ``field``."""
    if not 1 <= value <= most:
        raise BusinessRuleViolation(f"{field} is between 1 and {most}", field=field)
    return value


# --- messages ------------------------------------------------------------------------


def _content(payload: Mapping[str, Any]) -> Content:
    kind = payload.get("type")
    if kind == "text":
        text = payload.get("text")
        if not isinstance(text, str):
            raise BusinessRuleViolation("a text payload has a string 'text'", field="payload.text")
        return TextContent(text)
    if kind == "file":
        file_id = c.as_uuid(str(payload.get("file_id", "")))
        caption = payload.get("caption")
        if file_id is None:
            raise BusinessRuleViolation("a file payload has a 'file_id' UUID", field="payload.file_id")
        if caption is not None and not isinstance(caption, str):
            raise BusinessRuleViolation("a caption is a string", field="payload.caption")
        return FileContent(FileId(file_id), caption)
    raise BusinessRuleViolation("payload.type is 'text' or 'file'", field="payload.type")


def _channels(requested: Sequence[str] | None) -> tuple[Channel, ...] | None:
    if requested is None or list(requested) == ["all"]:
        return None
    if not requested:
        raise BusinessRuleViolation("channels names at least one channel, or 'all'", field="channels")
    chosen: list[Channel] = []
    for name in requested:
        if name == "all":
            raise BusinessRuleViolation("'all' cannot be combined with other channels", field="channels")
        ch = parse_channel(name, field="channels")
        if ch not in chosen:
            chosen.append(ch)
    return tuple(chosen)


def _fingerprint(cmd: c.SendMessage, sender: Participant) -> str:
    body = {
        "conversation_id": str(cmd.conversation_id),
        "from": sender.key,
        "to": list(cmd.to) if cmd.to is not None else None,
        "channels": list(cmd.channels) if cmd.channels is not None else None,
        "payload": cmd.payload,
        "metadata": cmd.metadata,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _accepted(m: Message) -> v.Accepted:
    return v.Accepted(message_id=m.id, conversation_id=m.conversation_id, seq=m.seq, created_at=m.created_at)


def _reused() -> Conflict:
    return Conflict("message_id was already used for a different message", field="message_id")


def _replay(existing: Message, fingerprint: str) -> v.Accepted:
    if existing.fingerprint != fingerprint:
        raise _reused()
    return _accepted(existing)


@attrs.frozen
class _Send:
    """A send command whose checks that need no stored data have passed."""

    cmd: c.SendMessage
    sender: Participant
    content: Content
    channels: tuple[Channel, ...] | None
    fingerprint: str
    message_id: MessageId


@attrs.frozen
class _Planned:
    index: int
    send: _Send
    conversation: Conversation
    recipients: tuple[Participant, ...]
    content: Content
    """The send's content, a file's described (filename, size, content type)."""


SendAnswer = v.Accepted | ApplicationError | BusinessRuleViolation
"""What one send command of a batch gets: its acceptance, or the error refusing it."""

_SEND_ATTEMPTS = 3


def _checked_send(cmd: c.SendMessage, d: Deps) -> _Send:
    sender = Participant.user(cmd.sender)
    content = _content(cmd.payload)
    channels = _channels(cmd.channels)
    return _Send(
        cmd=cmd,
        sender=sender,
        content=content,
        channels=channels,
        fingerprint=_fingerprint(cmd, sender),
        message_id=cmd.message_id or MessageId(d.ids.new()),
    )


async def _check_from(uow: UnitOfWork, cmd: c.SendMessage) -> None:
    if cmd.from_ is not None and cmd.from_ not in {str(cmd.sender), f"user:{cmd.sender}"}:
        me = await uow.users.get(cmd.sender)
        if me is None or cmd.from_ != me.username:
            raise Forbidden("'from' must be the caller")


async def _plan(uow: UnitOfWork, index: int, s: _Send, conv: Conversation | None) -> _Planned:
    if conv is None:
        raise NotFound("no such conversation")
    if not conv.has_member(s.sender):
        raise Forbidden("you are not a member of this conversation")
    await _check_from(uow, s.cmd)
    content = await _shared_file(uow, s.content, s.sender) if isinstance(s.content, FileContent) else s.content
    to = None if s.cmd.to is None else [await _resolve_member(uow, ref, field="to") for ref in s.cmd.to]
    return _Planned(index, s, conv, Message.resolve_recipients(conv, s.sender, to), content)


async def _shared_file(uow: UnitOfWork, content: FileContent, sender: Participant) -> FileContent:
    """The file content with what the message says about the file, if the sender may share it.

    A sender shares a completed upload of its own, or one it can read because a message it sees
    carries it (forwarding).
    """
    upload = await uow.uploads.get(content.file_id)
    if (
        upload is None
        or upload.status is not UploadStatus.COMPLETED
        or not (upload.owner_id == sender.user_id or await uow.messages.shares_file(content.file_id, sender))
    ):
        raise BusinessRuleViolation("no completed upload you can share has this file_id", field="payload.file_id")
    return attrs.evolve(content, file=FileInfo(upload.filename, upload.size, upload.content_type))


async def _accept_batch(sends: Sequence[tuple[int, _Send]], d: Deps) -> dict[int, SendAnswer]:
    """One transaction for the whole batch; each command still gets its own answer.

    Raises:
        DuplicateMessage: a concurrent request took one of the ids after the look-up; nothing
            was kept, and the caller tries again (the look-up then finds it).
    """
    answers: dict[int, SendAnswer] = {}
    repeats: list[tuple[int, _Send, int]] = []
    async with d.uow() as uow:
        # A retried message_id is answered as it was the first time, even if the rules that
        # accepted it would now refuse it (a member left, an identity was unlinked).
        context = await uow.lookups.for_sending(
            list({s.cmd.conversation_id for _, s in sends}),
            [s.message_id for _, s in sends if s.cmd.message_id is not None],
        )
        existing, conversations = context.existing, context.conversations
        planned: list[_Planned] = []
        first_use: dict[MessageId, int] = {}
        for i, s in sends:
            try:
                if (earlier := existing.get(s.message_id)) is not None:
                    answers[i] = _replay(earlier, s.fingerprint)
                elif s.message_id in first_use:
                    repeats.append((i, s, first_use[s.message_id]))
                else:
                    planned.append(await _plan(uow, i, s, conversations.get(s.cmd.conversation_id)))
                    first_use[s.message_id] = i
            except (ApplicationError, BusinessRuleViolation) as e:
                answers[i] = e
        identities = context.channels  # every member's: recipients are members
        now = d.clock.now()
        ready: list[tuple[_Planned, list[Delivery]]] = []
        for p in planned:
            try:
                deliveries = plan_deliveries(
                    message_id=p.send.message_id,
                    recipients=p.recipients,
                    channels=p.send.channels,
                    identities=identities,
                    at=now,
                )
            except BusinessRuleViolation as e:
                answers[p.index] = e
            else:
                ready.append((p, deliveries))
        if ready:
            messages = await accept_messages(
                uow,
                [
                    Acceptance(
                        message_id=p.send.message_id,
                        conversation=p.conversation,
                        sender=p.send.sender,
                        content=p.content,
                        recipients=p.recipients,
                        channels=p.send.channels,
                        metadata=p.send.cmd.metadata,
                        fingerprint=p.send.fingerprint,
                        deliveries=deliveries,
                        trace=p.send.cmd.trace,
                    )
                    for p, deliveries in ready
                ],
                at=now,
            )
            for (p, _), message in zip(ready, messages, strict=True):
                answers[p.index] = _accepted(message)
            await uow.commit()
    fingerprints = {i: s.fingerprint for i, s in sends}
    for i, s, first in repeats:
        # The same id twice in one batch (a client's retry racing its first attempt).
        answers[i] = _repeated(answers[first], same=fingerprints[first] == s.fingerprint)
    return answers


def _repeated(first: SendAnswer, *, same: bool) -> SendAnswer:
    """The answer to a message id's second use in one batch, given the first's answer."""
    if same:
        return first  # accepted or refused, as the first attempt
    return _reused() if isinstance(first, v.Accepted) else _busy()


def _busy() -> Busy:
    return Busy("message_id is being used concurrently; retry", field="message_id")


async def handle_send_messages(cmds: Sequence[c.SendMessage], d: Deps) -> list[SendAnswer]:
    """Accept messages durably, many in one transaction (group commit), each with its own answer.

    A message's seq, deliveries and outbox event commit together. A command the rules refuse
    gets its error and does not hold back the others; a failure of the database fails them all.
    """
    answers: dict[int, SendAnswer] = {}
    sends: list[tuple[int, _Send]] = []
    for i, cmd in enumerate(cmds):
        try:
            sends.append((i, _checked_send(cmd, d)))
        except (ApplicationError, BusinessRuleViolation) as e:
            answers[i] = e
    for _ in range(_SEND_ATTEMPTS if sends else 0):
        try:
            answers |= await _accept_batch(sends, d)
            break
        except DuplicateMessage:
            continue  # a concurrent request took an id between the look-up and the insert
    else:
        answers |= {i: _busy() for i, _ in sends}
    return [answers[i] for i in range(len(cmds))]


async def handle_send_message(cmd: c.SendMessage, d: Deps) -> v.Accepted:
    """Accept one message durably (a batch of one)."""
    [answer] = await handle_send_messages([cmd], d)
    if isinstance(answer, v.Accepted):
        return answer
    raise answer


async def _visible_message(uow: UnitOfWork, message_id: MessageId, viewer: Participant) -> Message:
    m = await uow.messages.get(message_id)
    if m is None or (m.sender != viewer and viewer not in m.recipients):
        raise NotFound("no such message")
    return m


async def handle_get_message(cmd: c.GetMessage, d: Deps) -> v.MessageView:
    """One message as history shows it; fetching it makes the viewer's ``internal`` copy DELIVERED, as history does."""
    viewer = Participant.user(cmd.viewer)
    async with d.uow() as uow:
        m = await _visible_message(uow, cmd.message_id, viewer)
        conv = await uow.conversations.get(m.conversation_id)
        if conv is None or not conv.has_member(viewer):
            raise NotFound("no such message")  # no longer a member: as if it did not exist
        if await _mark_fetched(uow, [m], viewer, at=d.clock.now()):
            await uow.commit()
        (view,) = await _message_views(uow, [m])
    return view


async def handle_get_history(cmd: c.GetHistory, d: Deps) -> v.HistoryView:
    """A page of messages the caller sent or receives, ascending by seq."""
    limit = bounded(cmd.limit, d.settings.history_max, field="limit")
    if cmd.after_seq is not None and cmd.before_seq is not None:
        raise BusinessRuleViolation("use after_seq or before_seq, not both", field="after_seq")
    viewer = Participant.user(cmd.viewer)
    async with d.uow() as uow:
        await _member_conversation(uow, cmd.conversation_id, cmd.viewer)
        query = HistoryQuery(
            conversation_id=cmd.conversation_id,
            viewer=viewer,
            limit=limit + 1,
            after_seq=cmd.after_seq,
            before_seq=cmd.before_seq,
            since=cmd.since,
        )
        found = list(await uow.messages.history(query))
        forward = cmd.after_seq is not None or (cmd.since is not None and cmd.before_seq is None)
        more = len(found) > limit
        page = (found[:limit] if forward else found[-limit:]) if more else found
        if await _mark_fetched(uow, page, viewer, at=d.clock.now()):
            await uow.commit()
        items = await _message_views(uow, page)
    next_cursor = None
    if more and page:
        next_cursor = (
            encode_history_cursor("after", page[-1].seq) if forward else encode_history_cursor("before", page[0].seq)
        )
    return v.HistoryView(items=items, next_cursor=next_cursor)


async def _mark_fetched(uow: UnitOfWork, messages: Sequence[Message], viewer: Participant, *, at: datetime) -> bool:
    """The viewer's Chat4All client now has these messages: their ``internal`` deliveries are DELIVERED.

    Returns True when something changed (and must be committed).
    """
    received = [m for m in messages if m.sender != viewer]
    if not received:
        return False
    waiting = [
        dl.key
        for dl in await uow.messages.deliveries([m.id for m in received])
        if dl.recipient == viewer and dl.channel is Channel.INTERNAL and dl.status is DeliveryStatus.SENT
    ]
    if not waiting:
        return False
    # Locked and read again: a concurrent read receipt may have moved them on meanwhile.
    changed = [dl for dl in await uow.messages.lock_deliveries(waiting) if dl.advance(DeliveryStatus.DELIVERED, at=at)]
    if not changed:
        return False
    await uow.messages.save_progress(changed)
    senders = {m.id: m.sender.key for m in received}
    for dl in changed:
        await emit_status(uow.outbox, messages[0].conversation_id, senders[dl.message_id], [dl])
    return True


async def handle_sync(cmd: c.Sync, d: Deps) -> v.SyncView:
    """New messages and delivery changes in the viewer's conversations after the cursor, oldest first.

    Without a cursor: nothing yet, and the cursor to start from. The viewer's ``internal``
    deliveries among the messages become DELIVERED, as when history is fetched.
    """
    limit = bounded(cmd.limit, d.settings.history_max, field="limit")
    now = d.clock.now()
    floor = SyncPosition(now - d.settings.sync_settle)
    if cmd.cursor is None:
        return v.SyncView(events=[], cursor=encode_sync_cursor(floor), has_more=False)
    after = decode_sync_cursor(cmd.cursor)
    viewer = Participant.user(cmd.viewer)
    async with d.uow() as uow:
        # (position, frame, the message when it is one)
        found: list[tuple[SyncPosition, dict[str, Any], Message | None]] = [
            (SyncPosition.of_message(m), message_frame(message_event(m, [])), m)
            for m in await uow.messages.created_since(viewer, after, limit=limit + 1)
        ]
        for dl, origin in await uow.messages.changed_since(viewer, after, limit=limit + 1):
            frame = status_event(origin.conversation_id, origin.sender.key, dl)
            del frame["sender"]
            found.append((SyncPosition.of_delivery(dl), frame, None))
        found.sort(key=lambda item: item[0])
        more = len(found) > limit
        page = found[:limit]
        by_conversation: dict[ConversationId, list[Message]] = {}
        for _, _, m in page:
            if m is not None:
                by_conversation.setdefault(m.conversation_id, []).append(m)
        fetched = [await _mark_fetched(uow, ms, viewer, at=now) for ms in by_conversation.values()]
        if any(fetched):
            await uow.commit()
    cursor = page[-1][0] if more else max(after, floor)
    return v.SyncView(events=[frame for _, frame, _ in page], cursor=encode_sync_cursor(cursor), has_more=more)


async def _message_views(
    uow: UnitOfWork, messages: Sequence[Message], users: Mapping[UserId, User] | None = None
) -> list[v.MessageView]:
    """The messages as history shows them; ``users`` must hold their senders' and recipients' (None: looked up)."""
    if not messages:
        return []
    deliveries = await uow.messages.deliveries([m.id for m in messages])
    by_message: dict[MessageId, list[DeliveryStatus]] = {}
    for dl in deliveries:
        by_message.setdefault(dl.message_id, []).append(dl.status)
    if users is None:
        users = await _users_of(uow, (p for m in messages for p in (m.sender, *m.recipients)))
    return [
        v.MessageView(
            message_id=m.id,
            conversation_id=m.conversation_id,
            seq=m.seq,
            sender=_member_view(m.sender, users),
            to=[_member_view(r, users) for r in m.recipients],
            channels=["all"] if m.channels is None else [ch.value for ch in m.channels],
            payload=payload_of(m.content),
            metadata=m.metadata,
            status=overall_status(by_message.get(m.id, [])).value,
            created_at=m.created_at,
        )
        for m in messages
    ]


async def handle_get_message_status(cmd: c.GetMessageStatus, d: Deps) -> v.MessageStatusView:
    """The sender sees every delivery; a recipient sees its own."""
    viewer = Participant.user(cmd.viewer)
    async with d.uow() as uow:
        m = await _visible_message(uow, cmd.message_id, viewer)
        deliveries = [dl for dl in await uow.messages.deliveries([m.id]) if viewer in (m.sender, dl.recipient)]
        handed_over = await uow.sends.sent([dl.key for dl in deliveries if dl.channel.is_platform])
        users = await _users_of(uow, (dl.recipient for dl in deliveries))
    history = sorted(
        (
            v.StatusEventView(
                status=h.status.value,
                recipient=_member_view(dl.recipient, users),
                channel=dl.channel.value,
                at=h.at,
                detail=h.detail,
            )
            for dl in deliveries
            for h in dl.history
        ),
        key=lambda e: e.at,
    )
    return v.MessageStatusView(
        message_id=m.id,
        status=overall_status(dl.status for dl in deliveries).value,
        deliveries=[
            v.DeliveryView(
                recipient=_member_view(dl.recipient, users),
                channel=dl.channel.value,
                status=dl.status.value,
                updated_at=dl.updated_at,
                error=dl.error,
                final=is_final(dl, handed_over=dl.key in handed_over),
            )
            for dl in deliveries
        ],
        history=history,
    )


async def handle_mark_read(cmd: c.MarkRead, d: Deps) -> v.ReadReceipt:
    """The reader read this message and every earlier one it received in the conversation."""
    reader = Participant.user(cmd.reader)
    async with d.uow() as uow:
        m = await _visible_message(uow, cmd.message_id, reader)
        if m.sender == reader:
            raise Forbidden("the sender cannot mark its own message read")
        now = d.clock.now()
        pending = await uow.messages.pending_for(m.conversation_id, reader, up_to_seq=m.seq)
        changed = [dl for dl in pending if dl.advance(DeliveryStatus.READ, at=now)]
        if changed:
            await uow.messages.save_progress(changed)
            senders = {
                msg.id: msg.sender.key
                for msg in (await uow.messages.get_many([dl.message_id for dl in changed])).values()
            }
            for dl in changed:
                await emit_status(uow.outbox, m.conversation_id, senders[dl.message_id], [dl])
        mine = [dl for dl in await uow.messages.deliveries([m.id]) if dl.recipient == reader]
        await uow.commit()
    read_at = min((h.at for dl in mine for h in dl.history if h.status is DeliveryStatus.READ), default=now)
    return v.ReadReceipt(message_id=m.id, read_at=read_at)


HANDLERS: Mapping[type, Callable[[Any, Deps], Any]] = {
    c.RegisterUser: handle_register_user,
    c.IssueTokenForPassword: handle_issue_token_for_password,
    c.IssueTokenForClient: handle_issue_token_for_client,
    c.RefreshToken: handle_refresh_token,
    c.CreateApiClient: handle_create_api_client,
    c.GetUser: handle_get_user,
    c.LinkIdentity: handle_link_identity,
    c.UnlinkIdentity: handle_unlink_identity,
    c.ListIdentities: handle_list_identities,
    c.CreateConversation: handle_create_conversation,
    c.GetConversation: handle_get_conversation,
    c.ListConversations: handle_list_conversations,
    c.SendMessage: handle_send_message,
    c.GetHistory: handle_get_history,
    c.GetMessage: handle_get_message,
    c.GetMessageStatus: handle_get_message_status,
    c.MarkRead: handle_mark_read,
    c.Sync: handle_sync,
}

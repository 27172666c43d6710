"""Each connector's capabilities agree with what the domain says its channel reports."""

from __future__ import annotations

import pytest

from adapters.channels import instagram, messenger, telegram, whatsapp
from domain.channels import Channel
from domain.deliveries import LAST_REPORTED, DeliveryStatus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("channel", "module"),
    [
        (Channel.WHATSAPP, whatsapp),
        (Channel.MESSENGER, messenger),
        (Channel.INSTAGRAM, instagram),
        (Channel.TELEGRAM, telegram),
    ],
)
def test_a_connector_has_receipts_exactly_when_its_channel_reports_past_sent(channel: Channel, module: object) -> None:
    capabilities = module.CAPABILITIES  # type: ignore[attr-defined]

    assert capabilities.receipts is (LAST_REPORTED[channel] is not DeliveryStatus.SENT)


@pytest.mark.parametrize(
    ("module", "echoes"),
    [(whatsapp, True), (messenger, True), (instagram, True), (telegram, False)],
    ids=["whatsapp", "messenger", "instagram", "telegram"],
)
def test_the_meta_platforms_echo_our_delivery_key_and_telegram_does_not(module: object, echoes: bool) -> None:
    """Echoes settle a send in doubt within a grace; Telegram's wait out the claim's lease (at least once)."""
    capabilities = module.CAPABILITIES  # type: ignore[attr-defined]

    assert capabilities.echoes is echoes
    assert not capabilities.lookup

"""The channel sandbox: WhatsApp, Messenger, Instagram and Telegram as Chat4All's connectors see them, on one port."""

"""Channel connectors: the platforms' send APIs behind the ChannelConnector port."""

"""Policy: who may call whom, where relays may send, how much they may use."""

"""Records kept about what the system did: relay sessions now; CDRs, quality and audit later."""

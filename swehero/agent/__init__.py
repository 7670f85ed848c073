"""The OpenHands-compatible agent: the four tools, sandboxed runtimes (bubblewrap, Docker), policies, the loop."""

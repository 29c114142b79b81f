"""twinsearch client library: what a calling service installs (no torch, no faiss)."""

"""twinsearch server: the gallery core (store, index, scoring) and its gRPC skin."""

"""twinsearch on a Ray cluster: bulk embedding with Ray Data, encoder replicas for the server.

Nothing here is imported by the default server or by the client: the commands that need Ray import
these modules only when asked to (`twinsearch embed`, `twinsearch index --ray`, `twinsearch serve
--encoders ray`), after checking that Ray is installed (the `twinsearch[ray]` extra).

- `runtime`: joining a cluster by address, or starting (and stopping) a local Ray instance.
- `sources`: the rows of a source (a folder tree, a zip of one, a CSV or Parquet manifest), with the
  client ids `twinsearch index` gives the same files.
- `pipeline`: read -> decode and preprocess -> a pool of `EncoderReplica` actors (which decode on CPU-only
  clusters) -> batches
  of vectors, written to Parquet (`embed_to_parquet`) or streamed to a server.
- `encoders`: `RayEncoderPool`, the server's encoder batches sent to replicas on the cluster.
"""

"""twinsearch client library: what a calling service installs (no torch, no faiss).

    from twinsearch.client import Client, LocalClient
    with Client("localhost:50051") as c:
        c.create_gallery("staff", exist_ok=True)
        c.enroll("staff", "alice", ["alice1.png", "alice2.png"], ids=["alice1", "alice2"])
        c.identify("staff", "probe.png", k=5)          # -> Identification(label or None, candidates, ...)

`Client` talks gRPC to a server; `LocalClient` (imported lazily: it needs the server extra, torch
and faiss) runs the same engine in-process on a data folder. Both have the same methods, return the
dataclasses below and raise the exceptions below.
"""

from typing import TYPE_CHECKING

from twinsearch.client.bulk import BulkProgress, BulkReport, FileFailure
from twinsearch.client.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TwinsearchError,
    Unauthenticated,
    Unavailable,
)
from twinsearch.client.types import (
    Candidate,
    ClassCount,
    ClassPage,
    Enrolled,
    EnrollFailure,
    EnrollResult,
    GalleryInfo,
    GalleryPage,
    Identification,
    IndexKind,
    IndexSpec,
    InputSpec,
    ModelInfo,
    Neighbor,
    OperatingPoint,
    ProbeFailure,
    Scoring,
    ServerInfo,
    Threshold,
    ThresholdSource,
    Verification,
)

if TYPE_CHECKING:
    from twinsearch.client.remote import Client

__all__ = [
    "AlreadyExists", "BulkProgress", "BulkReport", "Cancelled", "Candidate", "ClassCount", "ClassPage", "Client",
    "DeadlineExceeded", "EnrollFailure", "EnrollResult", "Enrolled", "FailedPrecondition", "FileFailure",
    "GalleryInfo", "GalleryPage", "Identification", "IndexKind", "IndexSpec", "InputSpec", "InternalError", "InvalidArgument",
    "ModelInfo", "Neighbor", "NotFound", "OperatingPoint", "ProbeFailure", "ResourceExhausted", "Scoring",
    "ServerInfo", "Threshold", "ThresholdSource", "TwinsearchError", "Unauthenticated", "Unavailable",
    "Verification",
]


def __getattr__(name: str):
    # Client imports grpc, which reads GRPC_VERBOSITY as it is imported: the command line sets that variable
    # first (twinsearch.client.cli), so importing this package does not import grpc.
    if name == "Client":
        from twinsearch.client.remote import Client
        return Client
    # LocalClient needs the server (torch, faiss): import it only when asked for.
    # (Not in __all__, so that `from twinsearch.client import *` works without the server extra.)
    if name == "LocalClient":
        try:
            from twinsearch.server.local_client import LocalClient
        except ImportError as exc:
            raise ImportError(
                f"LocalClient runs the server's engine in-process and needs the server extra (torch, faiss): "
                f"pip install 'twinsearch[server]' ({exc})"
            ) from exc
        return LocalClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

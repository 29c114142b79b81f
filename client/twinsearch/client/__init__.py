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
from twinsearch.client.remote import Client
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

__all__ = [
    "AlreadyExists", "BulkProgress", "BulkReport", "Cancelled", "Candidate", "ClassCount", "ClassPage", "Client",
    "DeadlineExceeded", "EnrollFailure", "EnrollResult", "Enrolled", "FailedPrecondition", "FileFailure",
    "GalleryInfo", "GalleryPage", "Identification", "IndexKind", "IndexSpec", "InputSpec", "InternalError", "InvalidArgument",
    "ModelInfo", "Neighbor", "NotFound", "OperatingPoint", "ProbeFailure", "ResourceExhausted", "Scoring",
    "ServerInfo", "Threshold", "ThresholdSource", "TwinsearchError", "Unauthenticated", "Unavailable",
    "Verification",
]


def __getattr__(name: str):
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

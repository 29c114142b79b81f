"""The rows of a bulk-embedding source: a folder tree, a zip of one, or a manifest.

Each row names one image: its client id, class label, metadata, and where its bytes are (a file, or a
member of a zip). Client ids are those `twinsearch index` gives the same files, so vectors embedded
here and images indexed there land under the same ids:

- a folder tree: `twinsearch.client.bulk.walk_folder` itself (class depth, hidden files, extensions,
  links), ids from `client_id_for(relative path)`;
- a zip of a tree: the same rules on the member names, after leading folders that every image shares
  while it still sits deeper than the class depth (`photos.zip` holding `photos/alice/1.png` gives
  `alice/1.png`, as indexing the unpacked `photos/` would);
- a manifest (`.csv` or `.parquet`): a path column and a label column; every other column is metadata
  (strings). Relative paths are relative to the manifest's folder; the id is the path as written.

Files outside a class folder are failures of the listing, as `twinsearch index` reports them.

The listing is made where the command runs; the files are read by path on the cluster's workers, so
the rows hold absolute paths, and on a cluster of several machines the source must be on a file system
that every node mounts at the same path (docs/scaling.md).
"""

from __future__ import annotations

import csv
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from twinsearch.client.bulk import IMAGE_EXTENSIONS, FileFailure, client_id_for, walk_folder
from twinsearch.client.errors import InvalidArgument

MANIFEST_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class SourceRow:
    client_id: str
    label: str
    path: str            # the file, or the zip archive holding `member`
    member: str = ""     # the member's name inside the zip ("" for a plain file)
    metadata: dict[str, str] = field(default_factory=dict)
    relative: str = ""   # the name reports give (the path relative to the source)

    def as_record(self) -> dict[str, str]:
        """The row as flat strings, for a Ray dataset."""
        return {"client_id": self.client_id, "label": self.label, "path": self.path, "member": self.member,
                "metadata": json.dumps(self.metadata, sort_keys=True), "relative": self.relative or self.client_id}


@dataclass(frozen=True)
class Listing:
    rows: list[SourceRow]
    failures: list[FileFailure]   # files found that cannot be embedded (outside a class folder)

    @property
    def found(self) -> int:
        return len(self.rows) + len(self.failures)


def list_source(source: str | Path, class_depth: int = 1, *, path_column: str = "path",
                label_column: str = "label") -> Listing:
    """The rows of `source` (see the module docstring); InvalidArgument for a source that is none of
    a folder, a zip or a manifest, or a manifest without its columns."""
    # Absolute: the rows are opened by tasks on the cluster's workers, whose working folder is not ours.
    source = Path(source).absolute()
    if not source.exists():
        raise InvalidArgument(f"no such file or folder: {str(source)!r}")
    if class_depth < 1:
        raise InvalidArgument(f"class depth must be >= 1, got {class_depth}")
    if source.is_dir():
        entries, outside = walk_folder(source, class_depth)
        rows = [SourceRow(client_id_for(e.relative), e.label, str(e.path), relative=e.relative) for e in entries]
        return Listing(rows, list(outside))
    if source.suffix.lower() in MANIFEST_SUFFIXES:
        return _manifest(source, path_column, label_column)
    if zipfile.is_zipfile(source):
        return _zip(source, class_depth)
    raise InvalidArgument(f"{str(source)!r} is neither a folder, a zip of one, nor a .csv or .parquet manifest")


def _zip(archive: Path, class_depth: int) -> Listing:
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if not n.endswith("/"))
    images = [PurePosixPath(n) for n in names
              if not any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(n).parts)
              and PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS]
    strip = 0
    while images and all(len(p.parts) - 1 > class_depth + strip for p in images):
        if len({p.parts[strip] for p in images}) != 1:
            break
        strip += 1
    rows, failures = [], []
    for p in images:
        relative = "/".join(p.parts[strip:])
        dirs = p.parts[strip:-1]
        if len(dirs) < class_depth:
            failures.append(FileFailure(relative, f"not inside a class folder (class depth {class_depth})"))
            continue
        rows.append(SourceRow(client_id_for(relative), "/".join(dirs[:class_depth]), str(archive), member=str(p),
                              relative=relative))
    return Listing(rows, failures)


def _manifest(manifest: Path, path_column: str, label_column: str) -> Listing:
    if manifest.suffix.lower() == ".csv":
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would end up in the
        # first column's name.
        try:
            with open(manifest, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns = list(reader.fieldnames or [])
                records = list(reader)
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"manifest {str(manifest)!r} is not UTF-8 text (byte {exc.start}): save it as "
                                  "CSV in UTF-8") from None
        except csv.Error as exc:
            raise InvalidArgument(f"manifest {str(manifest)!r} is not a readable CSV file: {exc}") from None
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(manifest)
        columns = table.column_names
        records = table.to_pylist()
    missing = [c for c in (path_column, label_column) if c not in columns]
    if missing:
        raise InvalidArgument(f"manifest {str(manifest)!r} has no column {', '.join(map(repr, missing))} "
                              f"(its columns: {', '.join(columns) or 'none'}): name the path and label columns "
                              "with --path-column and --label-column")
    extra = [c for c in columns if c not in (path_column, label_column)]
    rows, failures = [], []
    seen: set[str] = set()
    for i, record in enumerate(records, start=2 if manifest.suffix.lower() == ".csv" else 1):
        written = str(record.get(path_column) or "").strip()
        label = str(record.get(label_column) or "").strip()
        if not written or not label:
            # Named by the row alone when it has no path: "row 5: empty path", not "row 5: row 5: ...".
            failures.append(FileFailure(written, f"row {i}: empty {label_column}") if written
                            else FileFailure(f"row {i}", f"empty {path_column}"))
            continue
        if written in seen:
            failures.append(FileFailure(written, f"row {i}: the same path as an earlier row"))
            continue
        seen.add(written)
        path = Path(written) if Path(written).is_absolute() else manifest.parent / written
        metadata = {c: str(record[c]) for c in extra if record.get(c) not in (None, "")}
        rows.append(SourceRow(client_id_for(written), label, str(path), metadata=metadata, relative=written))
    return Listing(rows, failures)

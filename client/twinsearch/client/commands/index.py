"""`twinsearch index DIR... --gallery G`: bulk-enroll folder trees, one folder per class; or the vectors
`twinsearch embed` wrote (`--vectors VDIR`); or a source embedded on a Ray cluster (`--ray ADDRESS`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twinsearch.client.bulk import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE
from twinsearch.client.commands._common import (
    CommandLineError,
    add_connection_arguments,
    connect,
    handles_errors,
    print_json,
    table,
)
from twinsearch.client.errors import NotFound
from twinsearch.client.layout import survey
from twinsearch.client.vector_bulk import (
    check_fingerprint,
    enroll_vector_batches,
    enroll_vectors,
    stored_client_ids,
)
from twinsearch.client.vector_files import require_pyarrow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Enroll every image under DIR into a gallery. Each folder at depth --class-depth is a class: with "
        "the default 1, DIR/alice/*.jpg is class 'alice'; with 2, DIR/Tagalog/character01/*.png is class "
        "'Tagalog/character01'. Each file's client id is its path relative to DIR, so running the same "
        "command again (after an interruption, or with new files) stores only what is missing; a file whose "
        "path the gallery stores with another image is refused (give another --id-prefix, or delete the stored "
        "item). Files that cannot be enrolled (unreadable, undecodable, outside a class folder) do not stop the "
        "run: they are "
        "listed at the end, and the exit status is then 1 unless --allow-partial is given. Before sending, "
        "the classes found are listed with their image counts, with a warning when the class depth looks "
        "wrong or when several folders hold the same class names (their images would fill one class). With "
        "several folders, each file's id starts with its folder's name (photos/alice/1.png)."
    )
    parser.description += (
        " With --vectors DIR instead, the Parquet files `twinsearch embed` wrote are loaded as vectors (refused "
        "before anything is sent when their model is not the gallery's). With --ray ADDRESS, one DIR (or zip, or "
        "manifest) is embedded on that Ray cluster and its vectors streamed to the server as batches finish; images "
        "whose client id the gallery stores already are skipped before embedding, so `sent` counts the images "
        "embedded."
    )
    parser.add_argument("folders", nargs="*", metavar="DIR", help="root of a folder tree (several: one run)")
    parser.add_argument("--vectors", metavar="VDIR", default=None,
                        help="load the vectors in VDIR (Parquet files of `twinsearch embed`) instead of images")
    cluster = parser.add_argument_group("embedding on Ray (needs the twinsearch[ray] extra)")
    cluster.add_argument("--ray", metavar="ADDRESS", default=None,
                         help="embed on the Ray cluster at ADDRESS (HOST:PORT of its head, or 'auto'; 'local' "
                              "starts a local instance for this run) and send vectors, not images; the workers "
                              "read the images by path, so DIR must be on a file system every node mounts")
    cluster.add_argument("--model-file", metavar="M", default=None,
                         help="with --ray: the model file (or shipped model name) to embed with, the one the "
                              "gallery is bound to (default: omniglot)")
    cluster.add_argument("--encoders", type=int, default=0, metavar="N",
                         help="with --ray: encoder replicas (default 0: one per GPU of the cluster, or without "
                              "GPUs one per CPU, as far as its memory holds 1 GiB for each)")
    parser.add_argument("--gallery", "-g", required=True, help="the gallery to enroll into")
    parser.add_argument("--class-depth", type=int, default=1, metavar="N",
                        help="folder depth that names the class (default: %(default)s)")
    parser.add_argument("--create", action="store_true", help="create the gallery (default settings) if missing")
    parser.add_argument("--model", metavar="NAME",
                        help="with --create: the server's model to bind a new gallery to (default: its default model)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images per request (default: %(default)s; vectors: at least 256)")
    parser.add_argument("--batch-mb", type=float, default=DEFAULT_BATCH_BYTES / (1 << 20), metavar="MB",
                        help="a request of images closes early when its files would pass this many MiB "
                             "together, so that large images stay under the server's message limit "
                             "(default: %(default)g)")
    parser.add_argument("--in-flight", type=int, default=4,
                        help="requests awaiting acknowledgement at once (default: %(default)s)")
    parser.add_argument("--id-prefix", default="", help="prefix of the client ids (default: none)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit with status 0 even when some files could not be enrolled")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    if args.vectors is not None:
        if args.folders or args.ray:
            raise CommandLineError("give either DIR (images) or --vectors VDIR, not both")
        require_pyarrow()  # before connecting: a missing extra is the first thing to say
        from twinsearch.client.vector_files import read_info

        made = read_info(args.vectors) if Path(args.vectors).is_dir() else None
        return _send(args, lambda client, progress: enroll_vectors(
            client, args.gallery, args.vectors, batch_size=max(args.batch_size, 256), max_in_flight=args.in_flight,
            progress=progress), made_by=None if made is None else (made.fingerprint, made.model))
    if not args.folders:
        raise CommandLineError("give a folder to index (DIR), or --vectors VDIR")
    if args.ray is not None:
        if len(args.folders) != 1:
            raise CommandLineError("--ray embeds one source at a time: give one DIR, zip or manifest")
        send, model = _embed_on_ray(args)
        return _send(args, send, made_by=(model.fingerprint, model.name))
    found = survey(args.folders, args.class_depth)
    notes = sys.stderr if args.json else sys.stdout  # keep --json output one JSON document
    print(found.summary(), file=notes, flush=True)
    for warning in found.warnings():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if not found.images:  # nothing to send: say so before creating or touching the gallery
        raise CommandLineError(f"no images in class folders at class depth {args.class_depth} under "
                               f"{', '.join(map(str, args.folders))}: see the survey above")

    if args.batch_size < 1 or args.batch_mb <= 0:
        raise CommandLineError("--batch-size must be at least 1 and --batch-mb above 0")
    batch_bytes = max(1, int(args.batch_mb * (1 << 20)))

    def images(client, progress):
        folders = args.folders[0] if len(args.folders) == 1 else args.folders
        return client.enroll_folder(args.gallery, folders, class_depth=args.class_depth,
                                    batch_size=args.batch_size, max_batch_bytes=batch_bytes,
                                    max_in_flight=args.in_flight,
                                    id_prefix=args.id_prefix, progress=progress)

    return _send(args, images)


def _embed_on_ray(args: argparse.Namespace):
    """The sender of `index SOURCE --ray ADDRESS`: the embedding pipeline's batches as vectors."""
    from twinsearch.client.cli import RAY_EXTRA, _installed

    missing = [p for p in ("torch", *RAY_EXTRA) if not _installed(p)]
    if missing:
        raise CommandLineError(f"--ray needs {' and '.join(missing)}, which is not installed; install the "
                               "server and ray extras: pip install 'twinsearch[server,ray]'")
    # The pipeline lives beside the server (it runs the encoder); imported only when asked for.
    from twinsearch.server.cluster.pipeline import EmbedSettings, ModelFile, embed_rows, local_size
    from twinsearch.server.cluster.runtime import RaySettings, RayUnavailable, ray_session
    from twinsearch.server.cluster.sources import list_source
    from twinsearch.server.commands.embed import quiet_ray, ray_notes_to_stderr

    quiet_ray()
    try:
        model = ModelFile.load(args.model_file)
    except ValueError as exc:  # a missing or corrupt model file
        raise CommandLineError(str(exc)) from None
    listing = list_source(args.folders[0], args.class_depth)
    settings = EmbedSettings(encoders=args.encoders)
    address = None if args.ray == "local" else args.ray

    def send(client, progress):
        check_fingerprint(client, args.gallery, model.fingerprint, model.name, f"model {model.name}")
        # Images whose client id the gallery holds already are not embedded again (a re-run embeds
        # only what is new); they count as skipped.
        stored = stored_client_ids(client, args.gallery, [r.client_id for r in listing.rows])
        todo = [r for r in listing.rows if r.client_id not in stored]

        def enroll(batches):
            return enroll_vector_batches(
                client, args.gallery, batches, total=len(todo), found=listing.found, failures=listing.failures,
                skipped=len(listing.rows) - len(todo), batch_size=max(args.batch_size, 256),
                max_in_flight=args.in_flight, progress=progress)

        if not todo:  # nothing to embed: no Ray at all
            return enroll(())
        try:
            with ray_notes_to_stderr(), ray_session(local_size(RaySettings(address), settings)):
                return enroll(embed_rows(todo, model, settings))
        except RayUnavailable as exc:
            raise CommandLineError(str(exc)) from None

    return send, model


def _gallery_model(client, args: argparse.Namespace, made_by: tuple[str, str] | None) -> str | None:
    """The server model a gallery created by --create binds to: --model, or for vectors made by a model
    (`made_by`: fingerprint, name) the server's model with that fingerprint. CommandLineError, before
    anything is created, when the server holds no model the vectors fit."""
    if made_by is None:
        return args.model
    fingerprint, name = made_by
    models = client.info().models
    if args.model is not None:
        chosen = next((m for m in models if m.name == args.model), None)
        if chosen is not None and chosen.fingerprint != fingerprint:
            raise CommandLineError(f"the vectors come from model {name} ({fingerprint}); the server's model "
                                   f"{args.model} is another ({chosen.fingerprint}): nothing was created")
        return args.model
    match = next((m for m in models if m.fingerprint == fingerprint), None)
    if match is None:
        held = ", ".join(f"{m.name} ({m.fingerprint})" for m in models)
        raise CommandLineError(f"the vectors come from model {name} ({fingerprint}), which the server does not "
                               f"hold (it holds {held}); serve that model too (--model NAME=PATH), then index "
                               "again: nothing was created")
    return match.name


def _send(args: argparse.Namespace, send, made_by: tuple[str, str] | None = None) -> int:
    """Connect, create the gallery if asked, run `send(client, progress)` under a progress bar, report.
    `made_by`: the (fingerprint, name) of the model that made the vectors sent, when they are vectors."""
    with connect(args) as client:
        try:
            existing = client.get_gallery(args.gallery)
        except NotFound:
            if not args.create:
                raise NotFound(f"no gallery named {args.gallery!r}: give --create to create it") from None
            client.create_gallery(args.gallery, exist_ok=True, model=_gallery_model(client, args, made_by))
        else:
            if args.model is not None and existing.model != args.model:
                raise CommandLineError(f"gallery {args.gallery!r} exists, bound to model {existing.model}: --model "
                                       "chooses the model of a gallery --create makes, and cannot change it")
        bar = None
        if not args.no_progress and not args.json:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="img", desc=f"index {args.gallery}", dynamic_ncols=True, file=sys.stderr)

        latest = []  # the last progress reported, for the message of a Ctrl-C

        def progress(p) -> None:
            latest[:] = [p]
            if bar is None:
                return
            bar.total = p.total
            bar.update(p.done - bar.n)
            bar.set_postfix(stored=p.stored, skipped=p.skipped, failed=p.failed, refresh=False)

        try:
            report = send(client, progress)
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            print(_interrupted(latest[0] if latest else None, args), file=sys.stderr)
            return 130
        finally:
            if bar is not None:
                bar.close()
    if args.json:
        print_json({**_summary(report), "failures": [{"path": f.path, "reason": f.reason} for f in report.failures]})
        return _status(report, args)
    if report.failures:
        print(f"\n{report.failed} files not enrolled:")
        for f in report.failures[:50]:
            print(f"  {f.path}: {f.reason}")
        if report.failed > 50:
            print(f"  ... and {report.failed - 50} more (--json lists them all)")
    # The server's reason for an image sent under a client id it stores with another image.
    clashes = sum("names another image" in f.reason for f in report.failures)
    if clashes and args.vectors is None:
        prefix = f" with --id-prefix {args.id_prefix!r}" if args.id_prefix else ""
        print(f"\nnote: {clashes} files are other images at paths the gallery stores already (their client ids "
              f"are each file's path under its folder{prefix}). If they come from another folder laid out like "
              "one indexed before, index them with another --id-prefix; to replace the stored images, delete "
              f"them first (twinsearch delete {args.gallery} --client-ids PATH ...)", file=sys.stderr)
    s = _summary(report)
    print()
    print(table([[*(s[k] for k in ("gallery", "found", "sent", "stored", "skipped", "failed")),
                  f"{report.seconds:.1f}", f"{report.images_per_s:.{0 if report.images_per_s >= 10 else 1}f}"]],
                ["gallery", "found", "sent", "stored", "skipped", "failed", "seconds", "images/s"]))
    return _status(report, args)


def _interrupted(progress, args: argparse.Namespace) -> str:
    """What a Ctrl-C left behind: what the server had acknowledged, and that running the same command
    again resumes (client ids make a re-run skip what is stored)."""
    done = "" if progress is None else (
        f" after {progress.done} of {progress.total} files: {progress.stored} stored, {progress.skipped} "
        f"already stored, {progress.failed} failed (requests in flight may have been stored too)")
    return (f"interrupted{done}; what the gallery {args.gallery!r} stores stays there, and the same command "
            "again sends only what is missing")


def _status(report, args: argparse.Namespace) -> int:
    """1 when some files were not enrolled (as cp and rsync do), unless --allow-partial."""
    if not report.failed or args.allow_partial:
        return 0
    print(f"error: {report.failed} of {report.found} files not enrolled "
          "(--allow-partial accepts a partial run)", file=sys.stderr)
    return 1


def _summary(report) -> dict:
    return {"gallery": report.gallery, "found": report.found, "sent": report.sent, "stored": report.stored,
            "skipped": report.skipped, "failed": report.failed, "seconds": round(report.seconds, 3),
            "images_per_s": round(report.images_per_s, 1)}

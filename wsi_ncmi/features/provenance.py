"""Which slide scan and which coordinates a cached file was made from, and checks of both.

* :func:`check_slide_unchanged`: ``wsi-extract`` refuses coords whose slide file was
  replaced (re-scanned) since tiling, naming both scans.
* :func:`check_features_coords`: a features file and its coords file belong together
  (same coordinates, same slide scan). Attributes only, so training can afford it.

Older files without the identity attributes (see :mod:`wsi_ncmi.slide.identity`) are
handled this way: coords without a slide fingerprint are verified by the slide's level-0
dimensions, which every coords file records (the slide is opened once); features without
``coords_sha256`` are compared with their coords by the coordinates themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsi_ncmi.errors import CacheSchemaError, SlideChangedError, WsiNcmiError
from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.slide.identity import SlideIdentity
from wsi_ncmi.tiling.schema import CoordsFile, decoded_attrs


def _current_dimensions(slide_path: Path, backend: str) -> tuple[int, int] | None:
    """Level-0 size of the slide now, or None when it cannot be opened (the job says why)."""
    from wsi_ncmi.slide import open_slide

    try:
        with open_slide(slide_path, backend) as slide:
            return slide.dimensions
    except (WsiNcmiError, OSError):
        return None


def check_slide_unchanged(coords: CoordsFile, slide_path: Path, backend: str) -> SlideIdentity:
    """Check that ``slide_path`` is the scan that ``coords`` were made from.

    Args:
        coords: A coords file (from :func:`~wsi_ncmi.tiling.schema.read_coords`).
        slide_path: Where the slide file is now.
        backend: Backend used to open it when only its dimensions can be compared.

    Returns:
        The recorded identity (what the features file will record).

    Raises:
        SlideChangedError: The file's size or fingerprint (or, for coords without a
            fingerprint, its level-0 dimensions) differ from the record; the message
            names both scans and the fix.
    """
    recorded = SlideIdentity.from_attrs(coords.attrs)
    if not slide_path.is_file():
        return recorded  # a missing slide fails in the job with its own error
    try:
        current = SlideIdentity.of_file(slide_path)
    except OSError:
        return recorded
    differences = recorded.differences(current) if recorded.has_fingerprint else []
    if recorded.has_fingerprint and not differences:
        return recorded
    dims = _current_dimensions(slide_path, backend)
    if dims is not None:
        current = SlideIdentity(current.size, current.mtime, dims[0], dims[1], current.fingerprint)
        differences = recorded.differences(current)
    if not differences:
        return recorded
    raise SlideChangedError(
        f"the slide {str(slide_path)!r} is not the scan that {str(coords.path)!r} was made "
        f"from ({'; '.join(differences)}): tiled from {recorded.describe()}, the file there "
        f"now is {current.describe()}. Its coordinates would be read from another image. "
        "Fix: re-run wsi-tile on this slide (it redoes slides whose file changed), then "
        "wsi-extract (it redoes features whose coords changed)",
        slide=str(slide_path),
        output=str(coords.path),
    )


def _attrs(path: Path, what: str) -> JSONObject:
    """The file's decoded attributes, memoised per process on its path and identity.

    A benchmark checks the same 500 pairs of files in every one of its cells; a file that
    is rewritten (a new inode or mtime) is read again.
    """
    from wsi_ncmi.batch.atomic import file_identity

    identity = file_identity(path)
    if identity is None:
        return _read_attrs(path, what)  # raises the readable error
    return dict(_cached_attrs(str(path), identity, what))


@functools.lru_cache(maxsize=65536)
def _cached_attrs(path: str, identity: tuple[int, int, int, int], what: str) -> JSONObject:
    # ``identity`` (wsi_ncmi.batch.atomic.file_identity) is only part of the cache key.
    return _read_attrs(Path(path), what)


def _read_attrs(path: Path, what: str) -> JSONObject:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return decoded_attrs(h5)
    except OSError as err:
        stage = "wsi-extract" if what == "features" else "wsi-tile"
        raise CacheSchemaError(
            f"cannot read {what} file {str(path)!r} (truncated or damaged?): {err}; re-run "
            f"{stage} on the same --out_dir (it redoes unreadable files)"
        ) from err


def check_features_coords(
    features_path: str | Path,
    coords_path: str | Path | None = None,
    *,
    features_attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Check that a features file was made from its coords file (attributes only).

    Compares the coordinates digest (``coords_sha256``) and the slide fingerprint that
    both files record. Values one of the files lacks (older files) are not compared.

    Args:
        features_path: A features ``.h5`` file.
        coords_path: Its coords file; default: the ``coords_file`` it records.
        features_attrs: The features file's attributes, if already read.

    The recorded ``coords_file`` is found relative to the features file
    (:func:`wsi_ncmi.batch.paths.resolve_stored_path`), never the working directory.

    Returns:
        True when the coords file was found and compared; False when the features file
        records none (imported features).

    Raises:
        SlideChangedError: They disagree; the message says which and how to fix it.
        CacheSchemaError: A file cannot be read, or the recorded coords file is not
            found (the check is never skipped silently).
    """
    from wsi_ncmi.batch.paths import resolve_stored_path

    features_path = Path(features_path)
    f_attrs = dict(features_attrs or _attrs(features_path, "features"))
    if coords_path is None:
        recorded = f_attrs.get("coords_file")
        if not recorded:
            return False
        found = resolve_stored_path(str(recorded), features_path)
        if found is None:
            slide_id = f_attrs.get("slide_id", features_path.stem)
            raise CacheSchemaError(
                f"features file {str(features_path)!r} was made from the coords file "
                f"{str(recorded)!r} (relative to the features file's folder), which is not "
                "there any more, so it cannot be checked against the slide's current tiling. "
                "Fix: put the coords folder back beside features/ (as wsi-tile and "
                f"wsi-extract left it), or re-run wsi-extract --redo {slide_id} with "
                "--coords_dir naming the current coords"
            )
        coords_path = found
    coords_path = Path(coords_path)
    if not coords_path.is_file():
        raise CacheSchemaError(
            f"coords file {str(coords_path)!r} of features file {str(features_path)!r} "
            "does not exist; give the coords file that the features were made from"
        )
    c_attrs = _attrs(coords_path, "coords")
    problems = []
    f_sha, c_sha = f_attrs.get("coords_sha256"), c_attrs.get("coords_sha256")
    if f_sha and c_sha and f_sha != c_sha:
        problems.append(f"coordinates {f_sha} vs {c_sha}")
    f_fp, c_fp = f_attrs.get("slide_fingerprint"), c_attrs.get("slide_fingerprint")
    if f_fp and c_fp and f_fp != c_fp:
        problems.append(f"slide fingerprint {f_fp} vs {c_fp}")
    if problems:
        slide_id = f_attrs.get("slide_id", features_path.stem)
        raise SlideChangedError(
            f"features file {str(features_path)!r} was not made from the coords file "
            f"{str(coords_path)!r} that is there now ({'; '.join(problems)}): the slide was "
            f"re-tiled since extraction. Fix: re-run wsi-extract (it redoes features whose "
            f"coords changed), or wsi-extract --redo {slide_id}",
            slide=str(c_attrs.get("slide_path", "")),
            output=str(features_path),
        )
    return True


__all__ = ["check_features_coords", "check_slide_unchanged"]

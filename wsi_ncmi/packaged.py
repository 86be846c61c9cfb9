"""Configs and manifests by name: files shipped inside the package, found from any directory.

The README's commands name ``configs/camelyon17/abmil_ncmi.yaml`` and the default manifest
``data_manifests/camelyon17.csv``, paths of the source checkout. Installed from a wheel,
those folders live inside the package (``wsi_ncmi/configs``, ``wsi_ncmi/data_manifests``).
:func:`resolve_packaged` keeps a path that exists as given (relative to the working
directory, as always), and otherwise finds the packaged file of that name: with or
without the leading ``configs/`` (``data_manifests/``).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: Packaged folders: ``{name used in paths: folder in the package}``.
PACKAGED = {"configs": PACKAGE_DIR / "configs", "data_manifests": PACKAGE_DIR / "data_manifests"}


def packaged_file(path: str | Path, kind: str) -> Path | None:
    """The packaged file that ``path`` names, or ``None``.

    Args:
        path: ``camelyon17/abmil_ncmi.yaml`` or ``configs/camelyon17/abmil_ncmi.yaml``.
        kind: ``configs`` or ``data_manifests``.

    Returns:
        The file inside the package, if there is one of that name.
    """
    relative = Path(path)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    if relative.parts and relative.parts[0] == kind:
        relative = Path(*relative.parts[1:]) if len(relative.parts) > 1 else Path()
    candidate = PACKAGED[kind] / relative
    return candidate if relative.parts and candidate.is_file() else None


def resolve_packaged(path: str | Path, kind: str) -> str:
    """``path`` if it exists, else the packaged file of that name, else ``path`` unchanged.

    Args:
        path: A file path as the user gave it.
        kind: ``configs`` or ``data_manifests``.

    Returns:
        The path to read (a string, as given when nothing better is found, so the
        reader's own "does not exist" error names what the user typed).
    """
    if Path(path).exists():
        return str(path)
    found = packaged_file(path, kind)
    return str(found) if found is not None else str(path)


def list_packaged(kind: str = "configs") -> list[str]:
    """Names of the packaged files of a kind (``camelyon17/abmil_ncmi.yaml``, ...), sorted."""
    root = PACKAGED[kind]
    suffixes = {".yaml", ".yml"} if kind == "configs" else {".csv"}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in suffixes)


__all__ = ["list_packaged", "packaged_file", "resolve_packaged"]

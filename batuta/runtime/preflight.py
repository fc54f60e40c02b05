"""What ``batuta validate`` checks on this machine, cheaply, before anything runs.

A model file named by a path, ``file://`` or ``pkg://`` (a file inside an installed
package) must exist; a GGUF file's header (read once, then cached by path, size and
mtime) must agree with the declared quantization; a server's ``executable:`` must be an
executable file. Nothing is downloaded and nothing is started: models from ``hf://``,
``https://`` and ``ollama://`` are left to ``plan``/``apply``. Each problem points at the
manifest field it is about, as the schema's and the rules' do.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from batuta.errors import ModelSourceError
from batuta.manifest.load import LocalCheck
from batuta.manifest.model import Manifest, Model
from batuta.manifest.model_rules import known_quantization
from batuta.manifest.problems import Loc, Problem
from batuta.runtime.gguf import MAGIC, same_quantization
from batuta.runtime.sources import default_cache_dir, header_facts, local_source_path

# How a value taken from ${env:...} is named in a message: it may be anything, so unshown.
_ENV_FILE = "the file (taken from the environment)"
_ENV_EXE = "this executable (taken from the environment)"


def local_checks(cache_dir: Path | None = None) -> LocalCheck:
    """The check :func:`batuta.manifest.load_manifest` runs with ``checks=``; GGUF headers
    are cached in ``cache_dir`` (default: :func:`default_cache_dir`)."""

    def run(manifest: Manifest, base_dir: Path, hidden: Collection[Loc]) -> list[Problem]:
        cache = cache_dir if cache_dir is not None else default_cache_dir()
        return list(check_local(manifest, base_dir, cache, hidden))

    return run


def check_local(
    manifest: Manifest, base_dir: Path, cache_dir: Path | None, hidden: Collection[Loc] = ()
) -> Iterator[Problem]:
    """Every problem with the local files and executables ``manifest`` names."""
    for name, model in manifest.models.items():
        yield from _model(("models", name), model, base_dir, cache_dir, hidden)
    yield from _budget(manifest, base_dir)
    for name, server in manifest.servers.items():
        loc: Loc = ("servers", name, "executable")
        if server.executable and shutil.which(server.executable) is None:
            shown = _ENV_EXE if loc in hidden else repr(server.executable)
            yield Problem(loc, f"{shown} is not found or not executable", at_value=True)


def _model(
    loc: Loc, model: Model, base_dir: Path, cache_dir: Path | None, hidden: Collection[Loc]
) -> Iterator[Problem]:
    source: Loc = (*loc, "source")
    try:
        path = local_source_path(model.source, base_dir)
    except ModelSourceError as exc:
        yield Problem(source, _without_source(str(exc), model.source), at_value=True)
        return
    if path is None:  # fetched by apply: nothing local to look at yet
        return
    shown = _ENV_FILE if source in hidden else str(path)
    if not path.exists():
        missing = (
            "model file (taken from the environment)" if source in hidden else f"model file {path}"
        )
        yield Problem(source, f"{missing} does not exist", at_value=True)
        return
    if not path.is_file():  # a model folder (safetensors, ...): read when served
        return
    try:
        with open(path, "rb") as f:
            is_gguf = f.read(4) == MAGIC
    except OSError as exc:
        yield Problem(source, f"cannot read {shown}: {exc.strerror or exc}", at_value=True)
        return
    if not is_gguf:
        if model.format == "gguf" and path.suffix.lower() == ".gguf":
            yield Problem(source, f"{shown} is not a GGUF file (bad magic)", at_value=True)
        return
    if model.format != "gguf" or not model.quantization:
        return
    if not known_quantization(model.quantization):
        return  # the rules already say it is unknown (and what it may have meant)
    try:
        facts = header_facts(path, cache_dir)
    except ModelSourceError as exc:
        yield Problem(source, _without_source(str(exc), str(path)), at_value=True)
        return
    found = facts.get("quantization")
    if isinstance(found, str) and not same_quantization(model.quantization, found):
        yield Problem(
            (*loc, "quantization"),
            f"is {model.quantization} but the file is {found}"
            f" (GGUF general.file_type {facts.get('file_type')})",
            at_value=True,
        )


def _budget(manifest: Manifest, base_dir: Path) -> Iterator[Problem]:
    """The memory budget with the estimates of servers that declare no ``memory:`` (the
    rules have checked the declared sizes alone; their complaints are not repeated)."""
    if manifest.defaults.memory_budget is None:
        return
    from batuta.catalogue import LLAMACPP_DEFAULT_CTX, lookup
    from batuta.manifest.ondemand import budget_problems
    from batuta.runtime.memory import estimate

    declared = {n: s.memory for n, s in manifest.servers.items() if s.memory is not None}
    memory = dict(declared)
    for name, server in manifest.servers.items():
        model = manifest.models.get(server.model)
        if server.memory is not None or model is None or model.format != "gguf":
            continue
        try:
            path = local_source_path(model.source, base_dir)
        except ModelSourceError:
            continue  # reported with the model
        if path is not None and path.is_file():
            backend = lookup(server.backend)
            llamacpp = backend is not None and backend.key == "llamacpp"
            ctx = server.ctx or (LLAMACPP_DEFAULT_CTX if llamacpp else None)
            size = estimate(path, ctx, server.engine or "server")
            if size is not None:
                memory[name] = size
    if memory == declared:
        return
    told = {p.loc for p in budget_problems(manifest, declared)}
    yield from (p for p in budget_problems(manifest, memory) if p.loc not in told)


def _without_source(message: str, text: str) -> str:
    # The error names the source or path first; the issue already points at it.
    return message.removeprefix(f"{text}: ").removeprefix(f"{text} ")

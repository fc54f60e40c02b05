"""Rules of ``models:``: sources batuta can fetch, formats that match the file, known
quantizations; and the quantization questions the servers' rules and preflight ask.

Separate from :mod:`batuta.manifest.server_rules` because a model is checked on its own,
whichever server loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from batuta._util.fuzzy import did_you_mean
from batuta.catalogue import CATALOGUE, Backend
from batuta.manifest.problems import Loc, Problem, Scope
from batuta.manifest.schemes import SOURCE_HINT, SOURCE_SCHEMES

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_EXTENSIONS = {".gguf": "gguf", ".safetensors": "safetensors", ".onnx": "onnx", ".bin": "pytorch"}


def known_quants() -> frozenset[str]:
    """Every quantization some backend of the catalogue loads, upper case."""
    # Computed when asked: the full catalogue includes plugins, loaded only when needed.
    return frozenset(q.upper() for b in CATALOGUE.values() for q in b.capabilities.quantization)


def known_quantization(quantization: str) -> bool:
    """Whether some backend of the catalogue knows ``quantization`` (case-insensitive)."""
    return quantization.upper() in known_quants()


def quantization_supported(backend: Backend, quantization: str) -> bool:
    """Whether ``backend`` loads models quantized as ``quantization`` (case-insensitive)."""
    return quantization.upper() in {q.upper() for q in backend.capabilities.quantization}


def model_problems(scope: Scope) -> Iterator[Problem]:
    """Everything wrong with each entry of ``models:`` beyond its shape."""
    for name, model in scope.m.models.items():
        loc: Loc = ("models", name)
        match = _SCHEME.match(model.source)
        scheme = match.group(1).lower() if match else ""
        rest = match.group(2) if match else model.source
        if match and scheme not in SOURCE_SCHEMES:
            yield Problem(
                (*loc, "source"),
                f"unsupported source scheme {scheme}://{did_you_mean(scheme, SOURCE_SCHEMES)};"
                f" {SOURCE_HINT}",
            )
        elif scheme == "pkg" and rest.count("/") < 1:
            yield Problem((*loc, "source"), "pkg:// sources are pkg://PACKAGE/PATH/IN/PACKAGE")
        elif scheme == "hf" and rest.count("/") < 1:
            yield Problem((*loc, "source"), "hf:// sources are hf://ORG/REPO[/FILE]")
        elif scheme == "http" and not model.sha256:
            # Nothing authenticates plain http: the pin is the only proof of the bytes.
            yield Problem(
                (*loc, "source"),
                "an http:// download is not authenticated: pin it with sha256: "
                "(the file's digest) or use https://",
            )
        elif not rest.strip():
            yield Problem((*loc, "source"), "is empty")
        for ext, fmt in _EXTENSIONS.items():
            if rest.lower().endswith(ext) and model.format != fmt:
                yield Problem(
                    (*loc, "format"),
                    f"is {model.format!r} but the source is a {ext} file (format: {fmt}?)",
                )
        quant = model.quantization
        if quant is not None and quant.upper() not in known_quants():
            hint = did_you_mean(quant.upper(), sorted(known_quants()))
            yield Problem(
                (*loc, "quantization"),
                f"unknown quantization {quant!r}{hint}; known: GGUF types such as Q4_K_M,"
                " Q4_1, Q8_0, F16; EXL2; AWQ, GPTQ, FP8",
            )

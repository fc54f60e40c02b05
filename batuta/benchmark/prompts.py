"""The prompts a benchmark sends: a prompts.jsonl file, a ShareGPT file, or random text.

``prompts.jsonl`` has one JSON object per line::

    {"prompt": "Explain TCP slow start", "max_tokens": 64, "system": "Be brief."}
    {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}

Blank lines are skipped. Every line is checked before anything is sent; all bad lines are
reported at once as ``file:line:col: field: message``. ShareGPT is the JSON list the vLLM
benchmark reads (``conversations[0]`` is the human turn); random prompts are
``input_len`` words drawn with a seeded generator, so two runs with one seed send the same
text.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batuta.backends.types import InferenceRequest, Message
from batuta.errors import BatutaError, ManifestIssue

_ROLES = ("system", "user", "assistant")
_KEYS = ("prompt", "messages", "max_tokens", "system")
_MAX_REPORTED = 20

# A small fixed vocabulary: random prompts must be reproducible without a tokenizer.
_VOCABULARY = (
    "the of and to in is was for on are with as by at from that this be or an have not "
    "which one all were when there can more if no out so what up about into than them "
    "time only new some could these two may first then do any like my now over such our "
    "man me even most made after also did many before must through back years where much "
    "your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against "
    "go came right used take three model server token stream latency cache batch queue"
)
_WORDS = tuple(_VOCABULARY.split())


class PromptFileError(BatutaError):
    """A prompts file has bad lines; ``issues`` lists each with its line and field."""

    def __init__(self, issues: list[ManifestIssue], total: int | None = None) -> None:
        self.issues = issues
        lines = [str(i) for i in issues]
        hidden = (total or len(issues)) - len(issues)
        if hidden > 0:
            lines.append(f"... and {hidden} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class BenchPrompt:
    """One prompt to send, with where it came from (``file:line`` or ``random:N``)."""

    prompt: str
    system: str | None = None
    history: tuple[Message, ...] = ()
    max_tokens: int | None = None
    source: str = ""

    def request(
        self,
        default_max_tokens: int | None,
        *,
        model: str | None = None,
        temperature: float | None = None,
    ) -> InferenceRequest:
        """The neutral request; the prompt's own ``max_tokens`` wins over the default."""
        return InferenceRequest(
            prompt=self.prompt,
            system=self.system,
            history=self.history,
            max_tokens=self.max_tokens if self.max_tokens is not None else default_max_tokens,
            temperature=temperature,
            model=model,
            stream=True,
        )

    def estimated_tokens(self) -> int:
        """A rough prompt size (4 characters a token) for servers that report no usage."""
        chars = len(self.prompt) + len(self.system or "")
        chars += sum(len(m.content) for m in self.history)
        return max(1, math.ceil(chars / 4))


# ---------------------------------------------------------------------------- prompts.jsonl


def _issue(path: Path, line: int, col: int, field: str, message: str) -> ManifestIssue:
    return ManifestIssue(str(path), line, col, field, message)


def _parse_messages(
    raw: Any, where: tuple[Path, int], issues: list[ManifestIssue]
) -> tuple[str | None, tuple[Message, ...], str] | None:
    path, line = where
    if not isinstance(raw, list) or not raw:
        issues.append(_issue(path, line, 1, "messages", "must be a non-empty list"))
        return None
    turns: list[Message] = []
    for i, item in enumerate(raw):
        field = f"messages[{i}]"
        if not isinstance(item, dict):
            issues.append(_issue(path, line, 1, field, "must be an object with role and content"))
            return None
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            issues.append(_issue(path, line, 1, f"{field}.role", f"must be one of {_ROLES}"))
            return None
        if not isinstance(content, str):
            issues.append(_issue(path, line, 1, f"{field}.content", "must be a string"))
            return None
        turns.append(Message(role, content))
    if turns[-1].role != "user":
        issues.append(_issue(path, line, 1, "messages", "the last message must be from user"))
        return None
    system = turns[0].content if turns[0].role == "system" else None
    history = tuple(turns[1 if system is not None else 0 : -1])
    if any(m.role == "system" for m in history):
        issues.append(_issue(path, line, 1, "messages", "a system message may only come first"))
        return None
    return system, history, turns[-1].content


def _parse_line(obj: Any, path: Path, line: int, issues: list[ManifestIssue]) -> BenchPrompt | None:
    if not isinstance(obj, dict):
        issues.append(_issue(path, line, 1, "", "each line must be a JSON object"))
        return None
    before = len(issues)
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        issues.append(_issue(path, line, 1, unknown[0], f"unknown field (expected one of {_KEYS})"))
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        issues.append(_issue(path, line, 1, "max_tokens", "must be a positive integer"))
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        issues.append(_issue(path, line, 1, "system", "must be a string"))
    history: tuple[Message, ...] = ()
    if "prompt" in obj and "messages" in obj:
        issues.append(_issue(path, line, 1, "prompt", "give prompt or messages, not both"))
        return None
    if "messages" in obj:
        parsed = _parse_messages(obj["messages"], (path, line), issues)
        if parsed is None:
            return None
        from_messages, history, prompt = parsed
        if from_messages is not None and system is not None:
            issues.append(_issue(path, line, 1, "system", "also given as a system message"))
        system = system if system is not None else from_messages
    elif "prompt" in obj:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt:
            issues.append(_issue(path, line, 1, "prompt", "must be a non-empty string"))
            return None
    else:
        issues.append(_issue(path, line, 1, "prompt", "missing (give prompt or messages)"))
        return None
    if len(issues) > before:
        return None
    return BenchPrompt(prompt, system, history, max_tokens, f"{path}:{line}")


def _at_field(issue: ManifestIssue, raw: str) -> ManifestIssue:
    """Point the column at the field's key on the line, when it is there."""
    key = issue.path.split("[")[0].split(".")[0]
    col = raw.find(f'"{key}"') + 1 if key else 0
    if col <= 0:
        return issue
    return ManifestIssue(issue.file, issue.line, col, issue.path, issue.message)


def load_jsonl(path: Path) -> list[BenchPrompt]:
    """Every prompt of a prompts.jsonl file, or PromptFileError naming each bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError([_issue(path, 1, 1, "", f"cannot read: {exc}")]) from exc
    prompts: list[BenchPrompt] = []
    issues: list[ManifestIssue] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            issues.append(_issue(path, number, exc.colno, "", f"invalid JSON: {exc.msg}"))
            continue
        before = len(issues)
        prompt = _parse_line(obj, path, number, issues)
        if prompt is not None:
            prompts.append(prompt)
        issues[before:] = [_at_field(issue, raw) for issue in issues[before:]]
    if issues:
        raise PromptFileError(issues[:_MAX_REPORTED], len(issues))
    if not prompts:
        raise PromptFileError([_issue(path, 1, 1, "", "no prompts in the file")])
    return prompts


# ---------------------------------------------------------------------------- datasets


def load_sharegpt(path: Path, seed: int = 0) -> list[BenchPrompt]:
    """ShareGPT conversations whose first turn is from the human, shuffled with ``seed``
    (vLLM keeps entries with at least two turns and shuffles them the same way)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        issue = _issue(path, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")
        raise PromptFileError([issue]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError([_issue(path, 1, 1, "", f"cannot read: {exc}")]) from exc
    if not isinstance(data, list):
        raise PromptFileError([_issue(path, 1, 1, "", "a ShareGPT file is a JSON list")])
    prompts: list[BenchPrompt] = []
    for i, entry in enumerate(data):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or len(turns) < 2 or not isinstance(turns[0], dict):
            continue
        first = turns[0]
        if first.get("from") not in ("human", "user") or not isinstance(first.get("value"), str):
            continue
        if first["value"]:
            prompts.append(BenchPrompt(first["value"], source=f"{path}[{i}]"))
    if not prompts:
        raise PromptFileError(
            [_issue(path, 1, 1, "conversations", "no entry with a human first turn")]
        )
    random.Random(seed).shuffle(prompts)
    return prompts


def random_prompts(n: int, input_len: int, seed: int = 0) -> list[BenchPrompt]:
    """``n`` prompts of ``input_len`` words each, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [
        BenchPrompt(" ".join(rng.choices(_WORDS, k=input_len)), source=f"random:{i}")
        for i in range(n)
    ]


def take(prompts: list[BenchPrompt], n: int | None) -> list[BenchPrompt]:
    """The first ``n`` prompts, cycling through the list when it is shorter."""
    if n is None:
        return list(prompts)
    return list(itertools.islice(itertools.cycle(prompts), n))

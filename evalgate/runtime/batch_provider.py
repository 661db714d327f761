"""One provider's Files and Batches endpoints, through litellm's batch functions.

litellm's ``create_file`` / ``create_batch`` / ``retrieve_batch`` / ``file_content`` /
``cancel_batch`` / ``list_batches`` speak to OpenAI and OpenAI-compatible servers
(``openai/``, ``hosted_vllm/``, ``litellm_proxy/``, and evalgate's local models through
their batch proxy), Azure, Vertex AI, Bedrock and (retrieve only) Anthropic. The runtime
uses them as they are: a provider litellm cannot batch fails the submission with its
own message, naming the route.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from evalgate.runtime.responses import litellm_module

TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Provider:
    """Where one route's batches go: litellm's provider name, endpoint and key."""

    provider: str
    api_base: str | None
    api_key: str | None

    def _kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"custom_llm_provider": self.provider}
        if self.api_base:
            kw["api_base"] = self.api_base
        if self.api_key:
            kw["api_key"] = self.api_key
        return kw

    def create(self, content: bytes, tag: str) -> str:
        """Uploads the JSONL and creates its batch (``metadata.evalgate_tag = tag``)."""
        litellm = litellm_module()
        uploaded = litellm.create_file(file=("batch.jsonl", content), purpose="batch", **self._kw())
        created = litellm.create_batch(
            completion_window="24h",
            endpoint=ENDPOINT,
            input_file_id=uploaded.id,
            metadata={"evalgate_tag": tag},
            **self._kw(),
        )
        return str(created.id)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = litellm_module().retrieve_batch(batch_id=batch_id, **self._kw())
        return {
            "id": batch.id,
            "status": batch.status,
            "output_file_id": getattr(batch, "output_file_id", None),
            "error_file_id": getattr(batch, "error_file_id", None),
        }

    def content(self, file_id: str) -> bytes:
        reply = litellm_module().file_content(file_id=file_id, **self._kw())
        return bytes(reply.content)

    def cancel(self, batch_id: str) -> None:
        litellm_module().cancel_batch(batch_id=batch_id, **self._kw())

    def find(self, tag: str, pages: int = 20) -> str | None:
        """The batch created with ``tag`` among the newest ``pages`` x 100, else None."""
        after: str | None = None
        for _ in range(pages):
            kw = {"limit": 100, **({"after": after} if after else {})}
            listing = litellm_module().list_batches(**self._kw(), **kw)
            data = list(getattr(listing, "data", None) or [])
            for batch in data:
                meta = getattr(batch, "metadata", None)
                if isinstance(meta, dict) and meta.get("evalgate_tag") == tag:
                    return str(batch.id)
            if not data or not getattr(listing, "has_more", False):
                return None
            after = data[-1].id
        return None


def provider_of(model: str, api_base: str | None, api_key: str | None) -> tuple[Provider, str]:
    """The route's :class:`Provider` and the model name its batch lines carry."""
    upstream, provider, _, _ = litellm_module().get_llm_provider(model=model, api_base=api_base)
    return Provider(provider, api_base, api_key), upstream


def parse_lines(raw: bytes, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Output/error file lines by custom_id: non-JSON lines and ids never sent are skipped;
    a custom_id seen twice keeps its first answered (HTTP 200) line."""
    lines: dict[str, dict[str, Any]] = {}
    for text in raw.splitlines():
        try:
            obj = json.loads(text)
            custom_id = obj["custom_id"]
        except (ValueError, TypeError, KeyError):
            continue
        if not isinstance(custom_id, str) or custom_id not in wanted:
            continue
        kept = lines.get(custom_id)
        if kept is None or (not answered(kept) and answered(obj)):
            lines[custom_id] = obj
    return lines


def answered(line: Any) -> bool:
    response = line.get("response") if isinstance(line, dict) else None
    return isinstance(response, dict) and response.get("status_code") == 200


def batch_rates(model: str) -> tuple[float, float] | None:
    """litellm's batch prices per token for ``model`` ((input, output)), if it has them."""
    try:
        costs = litellm_module().model_cost
    except Exception:
        return None
    entry = costs.get(model) or costs.get(model.partition("/")[2])
    if not isinstance(entry, dict):
        return None
    inp, out = entry.get("input_cost_per_token_batches"), entry.get("output_cost_per_token_batches")
    if isinstance(inp, int | float) and isinstance(out, int | float):
        return float(inp), float(out)
    return None


__all__ = [
    "ENDPOINT",
    "TERMINAL",
    "Provider",
    "answered",
    "batch_rates",
    "parse_lines",
    "provider_of",
]

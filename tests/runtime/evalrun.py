"""A real eval run (pytest --evalgate on the fake server) whose report the export tests use."""

from __future__ import annotations

import uuid
from pathlib import Path


def context_suite(base_url: str, n: int = 70, key: str | None = None) -> str:
    """Two tiers on the fake server; a trimmed config whose answers stay right."""
    key = key or uuid.uuid4().hex[:8]
    lines = [
        "suite: ctx",
        "feature: doc-qa",
        "tiers:",
        f'  large: {{model: "openai/fake?key={key}L", api_base: "{base_url}", '
        "price: {input_per_mtok: 2.5, output_per_mtok: 10}}",
        f'  small: {{model: "openai/fake?key={key}S", api_base: "{base_url}", '
        "price: {input_per_mtok: 0.15, output_per_mtok: 0.6}}",
        "prompt:",
        '  - {role: system, content: "Answer with the code only."}',
        '  - {role: user, content: "Q: {{ question }} C: {{ context }}"}',
        "assert:",
        '  - {type: contains, value: "{{ answer }}"}',
        "defaults: {max_tokens: 64, temperature: 0}",
        "configs:",
        "  - {id: large, tier: large}",
        "  - {id: large-trim50, tier: large, context_trim: 0.5, max_tokens: 48}",
        "baseline: large",
        "cases:",
    ]
    for i in range(n):
        notes = " ".join(f"Note {j} about item {i}." for j in range(4))
        lines.append(
            f'  - {{id: c{i:03d}, vars: {{question: "code of item {i}", '
            f'context: "{notes} The code of item {i} is v{i}.", answer: "v{i}"}}}}'
        )
    return "\n".join(lines) + "\n"


def write_suite(directory: Path, base_url: str) -> Path:
    path = directory / "ctx.yaml"
    path.write_text(context_suite(base_url))
    return path

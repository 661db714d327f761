"""A demo-like suite on the fault-injecting server: four configs that differ in quality,
cost and latency, a context the trim shortens, and hostile text in one case."""

from __future__ import annotations

import json

from evalgate.testing.fake_openai import make_model

XSS_OUTPUT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(1)>'


def demo_suite(base_url: str, key: str, cases: int = 120) -> str:
    """Suite YAML: the server echoes the prompt, so max_tokens and trimming cost answers."""
    large = "openai/" + make_model(latency_ms=150, key=key + "L")
    small = "openai/" + make_model(latency_ms=30, key=key + "S")
    rows = []
    for i in range(cases):
        answer = f"v{i * 7}"
        # The echoed answer sits after 2-6 filler sentences: output caps cut the long ones.
        sentences = 6 if i % 25 == 0 else 2 + i % 4
        filler = " ".join(f"Note {j} about item {i}." for j in range(sentences))
        context = f"{filler} The code of item {i} is {answer}."
        question = f"code of item {i}"
        if i == 3:
            question = f"{XSS_OUTPUT} {XSS_ATTR} code of item {i}"
        variables = json.dumps({"question": question, "context": context, "answer": answer})
        rows.append(f"  - {{id: case-{i:03d}, vars: {variables}}}")
    body = "\n".join(rows)
    return f"""\
suite: demo-qa
feature: support
tiers:
  large:
    {{model: "{large}", api_base: "{base_url}",
      price: {{input_per_mtok: 2.5, output_per_mtok: 10}}}}
  small:
    {{model: "{small}", api_base: "{base_url}",
      price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
prompt:
  - {{role: system, content: "Answer with the code only."}}
  - {{role: user, content: "Q: {{{{ question }}}} C: {{{{ context }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: large, tier: large, max_tokens: 64}}
  - {{id: large-trim50, tier: large, max_tokens: 64, context_trim: 0.5}}
  - {{id: small, tier: small, max_tokens: 40}}
  - {{id: small-short, tier: small, max_tokens: 30}}
baseline: large
cases:
{body}
"""

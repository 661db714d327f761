"""evalgate: evaluation-gated cost and latency optimisation for LLM applications.

Public API (everything else is internal)::

    import evalgate

    @evalgate.grader("mentions-refund")
    def mentions_refund(output, case):
        return "refund" in output.lower()
"""

from evalgate.graders.registry import Grade, GradeContext, grader
from evalgate.results import CallResult
from evalgate.trim import TrimResult, trim_context

__all__ = ["CallResult", "Grade", "GradeContext", "TrimResult", "grader", "trim_context"]
__version__ = "0.1.0"

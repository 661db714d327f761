"""evalgate.runtime: the exported policy enforced around litellm in an application.

::

    from evalgate.runtime import Policy

    policy = Policy.load("policy.py")   # written by `evalgate export`
    response = policy.completion(
        feature="doc-qa", user="u42", tenant="acme",
        messages=[{"role": "user", "content": "Context:\\n{context}\\n\\nQuestion: " + q}],
        context=document, query=q,
    )

Offline requests: ``policy.batch(feature, requests)`` (see :mod:`evalgate.runtime.batch`).

Imports neither pytest nor the eval stack (scipy, pandas, jinja2); litellm is imported on
the first call.
"""

from evalgate.runtime.backends import Backend, open_backend
from evalgate.runtime.batch import BatchHandle, BatchResult
from evalgate.runtime.cache import CachedAnswer, CacheRequest, ExactCache, Hit, ResponseCache
from evalgate.runtime.callpath import (
    Admission,
    Guard,
    Policy,
    PreparedCall,
    Router,
    StaticRouter,
    default_backend_url,
)
from evalgate.runtime.errors import PolicyError, UnknownFeatureError
from evalgate.runtime.ledger import Ledger, UsageRecord
from evalgate.runtime.limits import (
    LimitError,
    LimitExceeded,
    LimitOptions,
    LimitRules,
    Limits,
    LimitsUnavailable,
)
from evalgate.runtime.local import serve_local_models
from evalgate.runtime.messages import CONTEXT_SLOT

__all__ = [
    "CONTEXT_SLOT",
    "Admission",
    "Backend",
    "BatchHandle",
    "BatchResult",
    "CacheRequest",
    "CachedAnswer",
    "ExactCache",
    "Guard",
    "Hit",
    "Ledger",
    "LimitError",
    "LimitExceeded",
    "LimitOptions",
    "LimitRules",
    "Limits",
    "LimitsUnavailable",
    "Policy",
    "PolicyError",
    "PreparedCall",
    "ResponseCache",
    "Router",
    "StaticRouter",
    "UnknownFeatureError",
    "UsageRecord",
    "default_backend_url",
    "open_backend",
    "serve_local_models",
]

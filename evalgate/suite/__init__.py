"""Suite files: YAML -> validated frozen Suite (errors located to file:line)."""

from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import declares_suite, load_suite
from evalgate.suite.model import Case, Config, GraderSpec, Message, Price, Suite, Tier

__all__ = [
    "Case",
    "Config",
    "GraderSpec",
    "Message",
    "Price",
    "Suite",
    "SuiteError",
    "Tier",
    "declares_suite",
    "load_suite",
]

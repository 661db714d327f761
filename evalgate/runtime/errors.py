"""The runtime's errors: each names the policy file and the key that is wrong."""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy file (or a backend URL) the runtime cannot use; the message is one line."""


class UnknownFeatureError(PolicyError, KeyError):
    """``feature=`` names no feature of the policy."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

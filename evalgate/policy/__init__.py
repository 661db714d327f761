"""Export: a report's chosen configs -> a runtime policy module (see :mod:`.export`)."""

from evalgate.policy.export import ExportError, export_policy

__all__ = ["ExportError", "export_policy"]

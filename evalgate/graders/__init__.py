"""Graders: the registry and built-ins (grading itself is in ``evalgate.graders.grading``)."""

from evalgate.graders.registry import Grade, GraderDef, grader, known_names, lookup

__all__ = ["Grade", "GraderDef", "grader", "known_names", "lookup"]

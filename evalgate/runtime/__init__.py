"""evalgate.runtime: the exported policy enforced around litellm in an application."""

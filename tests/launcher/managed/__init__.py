"""Managed runs: the diagnosis, the controller's decisions, and the whole run interrupted twice (launcher/managed/)."""

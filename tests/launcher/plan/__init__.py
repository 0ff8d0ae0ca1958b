"""launcher plan: the ranking, its config, the command, the canary (launcher/plan/)."""

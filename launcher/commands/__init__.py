"""One module per ``launcher`` subcommand; each exposes ``command``."""

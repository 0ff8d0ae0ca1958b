"""Real parts for the tests: an OpenSSH server, an S3-compatible server, a box's Python.

Each part is started as a process and stopped by its PID. When a part cannot start, the
fixture fails (never skips): a green run must mean the real part was exercised.
"""

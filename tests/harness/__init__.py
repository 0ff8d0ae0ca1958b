"""Real parts for the tests: an OpenSSH server, two S3-compatible servers (rclone serve s3, moto)
and a strict B2-like proxy in front of them (s3proxy.py), a box's Python.

Each part is started as a process and stopped by its PID. When a part cannot start, the
fixture fails (never skips): a green run must mean the real part was exercised.
"""

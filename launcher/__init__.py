"""The laptop half: drives a box (local, any SSH host, or a rented one) and mirrors runs to a store.

Never imports torch. From ``trainer`` it uses only the torch-free modules
(errors, atomic, manifest, configlib, config).
"""

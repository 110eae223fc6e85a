"""Stand-ins for host and vendor APIs that cannot run here (nvidia-vfx, TouchDesigner).

They follow the documented APIs, are injected through ``sys.modules`` by the tests that need them,
and are never imported by the package itself.
"""

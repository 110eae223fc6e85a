"""Test stand-in for Daydream Scope's ``scope`` package (see tests/scope_standins/README.md)."""

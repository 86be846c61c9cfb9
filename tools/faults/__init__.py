"""Fault-injection harness of wsi-ncmi (see run_all and RELIABILITY.md)."""

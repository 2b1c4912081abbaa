"""Triggers: flows that start when rows appear, change or disappear (docs/triggers.md).

A sibling of the runtime: it uses the runtime's public API (profiles, Runtime, the JSON forms of
values) and adds sources of events — ``polling`` (new rows, new or updated rows, by keyset with a
checkpoint), ``notify`` (LISTEN/NOTIFY) and ``cdc`` (logical replication, pgoutput) — all with the
shape of :mod:`pgactions.triggers.base`.
"""

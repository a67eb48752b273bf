"""Reconciliation: what one host's libvirt really runs against what the database believes.

`findings` compares (pure), `repair` carries out the configured action per finding kind, `run`
does one pass for a host."""

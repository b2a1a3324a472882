"""The running credex node: config, store, ingest, policy, access log, feeds, queries,
lifecycle, gRPC servicers, CLI and telemetry.

It joins `catalog` (what records mean), `keys` (who signed what, and who may read it) and
`adapters` (where records come from) into a service. Nothing outside `node` imports it.
"""

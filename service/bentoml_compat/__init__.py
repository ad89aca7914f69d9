"""Every use of BentoML's internals, in one package: what the service needs that BentoML 1.4 has no public API for.

One package, so that a BentoML upgrade has one place to look (tests/test_architecture.py lets nothing else import
BentoML's private packages), and one module per need, so that each can be read and fixed alone:

- ``version``: whether the installed BentoML is one these internals were written against. When it is not, or
  when an internal is not where it should be, each part falls back to BentoML's documented behaviour (the
  self-proxy call, BentoML's own document, unbound APIs) and logs a warning.
- ``batching``: /classify's batches in-process through the batchable API's own dispatcher, one queue per model,
  and the answer to a request that dispatcher sheds.
- ``apis``: the service's APIs as BentoML presents them: bound once per instance, uploads documented as
  multipart, the OpenAPI document edited by the service, BentoML's API UI page.
- ``route_labels``: request metrics labelled by route rather than by path.
- ``command_line``: BentoML's command line run in this process, with a metrics folder per server.
- ``check``: :func:`check.check_internals` lists what is missing; tests/test_bentoml_compat.py fails on any of it.
"""

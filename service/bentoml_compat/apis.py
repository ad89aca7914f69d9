"""The service's APIs as BentoML presents them, where BentoML offers no hook: APIs bound once per instance
(:func:`bind_apis`), upload fields declared as the file parts of a multipart form (:func:`declare_multipart`),
the OpenAPI document, which BentoML cannot infer /classify's error answers or GET /models into, edited by the
service as a plain dict (:func:`extend_openapi`), and BentoML's API UI page (:func:`openapi_ui_page`), which
the service serves at /docs: its own page takes /."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import bentoml

from .version import _unsupported, log


def _document(spec: Any) -> dict:
    return spec.asdict()


def _specification(document: dict) -> Any:
    """BentoML's OpenAPISpecification of a document dict: what /docs.json and a Bento's openapi.yaml are made of."""
    from bentoml._internal.service.openapi.specification import OpenAPISpecification
    from bentoml._internal.utils.cattr import bentoml_cattr

    return bentoml_cattr.structure(document, OpenAPISpecification)


def extend_openapi(service: Any, edit: Callable[[dict], dict]) -> bool:
    """Serve ``edit(document)`` wherever BentoML serves ``service``'s OpenAPI document (as a dict, JSON's shape).

    BentoML's service object offers no hook: its class is swapped for a subclass whose ``openapi_spec``
    property edits what BentoML's own returns."""
    if _unsupported("keeping BentoML's own OpenAPI document"):
        return False
    base = type(service)

    class DocumentedService(base):  # type: ignore[misc, valid-type]  # a base known at run time only
        __slots__ = ()

        @property
        def openapi_spec(self):  # BentoML's property, edited
            return _specification(edit(_document(base.openapi_spec.fget(self))))

    try:
        service.__class__ = DocumentedService
    except TypeError as exc:  # a BentoML whose Service cannot be specialised: keep its own document
        log.warning("cannot extend the OpenAPI document (%s)", exc)
        return False
    return True


# ---------------------------------------------------------------------------------------------- API objects
def bind_apis(instance: Any, names: Sequence[str]) -> None:
    """Bind ``instance``'s APIs once. BentoML's API descriptor builds a new wrapper (inspect.signature,
    functools.wraps) on every attribute access, and its server looks the API up once per request and once
    per batched job; bound once, those look-ups find the same callable in the instance."""
    if _unsupported("API wrappers rebuilt on every access"):
        return
    for name in names:
        instance.__dict__[name] = getattr(type(instance), name).__get__(instance, type(instance))


def declare_multipart(descriptor: type[bentoml.IODescriptor], file_fields: Sequence[str]) -> None:
    """Have BentoML document ``descriptor`` as multipart/form-data whose ``file_fields`` are file parts. It
    recognises a file field only by a path or image type; an upload read into memory is neither."""
    descriptor.media_type = "multipart/form-data"
    descriptor.multipart_fields = list(file_fields)


# ---------------------------------------------------------------------------------------------- the API UI
def openapi_ui_page() -> Path | None:
    """The HTML file BentoML serves at / (its Swagger UI), or None where it is not. It loads its scripts from
    ``./static_content/`` and the document from ``./docs.json``, which BentoML keeps serving, so it works from
    any top-level path."""
    try:
        from _bentoml_impl.server import app
        from bentoml._internal.configuration.containers import BentoMLContainer

        name = "main-ui.html" if BentoMLContainer.new_index else "main-openapi.html"
        page = Path(app.__file__).parent / name
    except Exception as exc:  # other internals
        log.warning("BentoML's API UI page was not found (%s)", exc)
        return None
    return page if page.is_file() else None

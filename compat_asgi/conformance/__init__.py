"""Protocol conformance benchmark: score any OpenAI-compatible endpoint.

``compat-asgi conformance --base-url URL`` is a thin front end over
:func:`run_conformance`; rules are those of :mod:`compat_asgi.validate`.
"""

from compat_asgi.conformance.report import Report, Result
from compat_asgi.conformance.runner import API_CHOICES, DEFAULT_TIMEOUT, run_conformance
from compat_asgi.conformance.transport import ServerUnreachable

__all__ = ["API_CHOICES", "DEFAULT_TIMEOUT", "Report", "Result", "ServerUnreachable", "run_conformance"]

"""The HTTP API: enqueue and manage jobs from any language (``conveyor api``).

Standalone: ``create_app(ApiSettings.from_env())``. Inside your own FastAPI app::

    service = ApiService(ApiSettings.from_env())
    app.include_router(api_router(service), prefix="/jobs")   # close with service.aclose()
    install_security_scheme(app)                              # documents the bearer tokens
"""

from .app import create_app, install_security_scheme
from .auth import TokenStore, hash_token, new_token
from .routes import api_router
from .service import ApiService
from .settings import ApiSettings

__all__ = [
    "ApiService",
    "ApiSettings",
    "TokenStore",
    "api_router",
    "create_app",
    "hash_token",
    "install_security_scheme",
    "new_token",
]

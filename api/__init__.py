"""The HTTP face of mini-iaas: a thin Flask app that records requests and queues them. No libvirt here."""

from __future__ import annotations

from flask import Flask

from api import auth, metrics
from api.errors import register_error_handlers
from api.runtime import Runtime
from common.config import Settings, get_settings

MAX_BODY_BYTES = 64 * 1024


def create_app(config: Settings | None = None) -> Flask:
    """App factory: everything (engine, Celery producer) is built here, nothing at import time."""
    from api.views import actions, docs, flavors, health, images, keypairs, networks, project, tasks, vms

    settings = config or get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    Runtime.install(app, settings)
    register_error_handlers(app)
    # Every /v1 resource needs a token; health checks (and the API document) stay open.
    protected = [vms.bp, tasks.bp, images.bp, flavors.bp, keypairs.bp, networks.bp, actions.bp, project.bp]
    auth.install(app, protected)
    # Open like the health checks: a scrape carries no token (api/metrics.py says why that is safe).
    metrics.install(app)
    for blueprint in (health.bp, docs.bp, *protected):
        app.register_blueprint(blueprint)
    return app

"""The live dashboard at ``GET /dashboard``: what the server is doing, at a glance.

Static files under ``static/`` (HTML, CSS, a script and the vendored uPlot; no build step)
poll ``/dashboard/data`` every few seconds. That JSON is read from `Stats`, the counters behind
SHOW_STATUS and ``/metrics``, so the page, the status reply and Prometheus agree.
"""

from .routes import STATIC, index_page, mount_dashboard, wants_html
from .view import dashboard_view, model_settings

__all__ = ["STATIC", "dashboard_view", "index_page", "model_settings", "mount_dashboard", "wants_html"]

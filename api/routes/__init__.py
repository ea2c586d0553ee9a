"""Routers of the API. ``api.app`` includes the ``router`` of every module listed here that
exists; a team adding endpoints adds its module to this tuple and touches nothing else.

Order is the order routes are matched in: every request tries each route before its own. The readings
router (the dashboards' current-load polling, the hottest path) comes first; its paths cannot match any
facilities route (``{facility_id}`` is one path segment), so the order changes no answer (decision 1060)."""

ROUTER_MODULES: tuple[str, ...] = (
    "api.routes.readings",
    "api.routes.facilities",
    "api.routes.exports",
    "api.routes.forecasts",
    "api.routes.dr_events",
    "api.routes.dr_operator",
    "api.routes.webhook",
    "api.routes.utilities_admin",
    "api.routes.dashboard",
    "api.routes.runbooks",
)

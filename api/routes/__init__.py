"""Routers of the API. ``api.app`` includes the ``router`` of every module listed here that
exists; a team adding endpoints adds its module to this tuple and touches nothing else."""

ROUTER_MODULES: tuple[str, ...] = (
    "api.routes.facilities",
    "api.routes.readings",
    "api.routes.exports",
    "api.routes.forecasts",
    "api.routes.dr_events",
    "api.routes.dr_operator",
    "api.routes.webhook",
    "api.routes.utilities_admin",
    "api.routes.dashboard",
    "api.routes.runbooks",
)

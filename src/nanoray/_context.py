"""What init() returns: RayContext (dict and attribute access, as Ray's).
Kept apart from the dashboard so that init() never imports http.server
when no dashboard runs."""

import sys


class RayContext(dict):
    """What init() returns: ctx["dashboard_url"] and ctx.dashboard_url both
    work, as with Ray's RayContext; `with nanoray.init(): ...` shuts down
    at the end of the block."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        from nanoray import _api
        _api.shutdown()


def context(num_cpus):
    """init()'s return value for the running runtime."""
    dashboard = sys.modules.get("nanoray._dashboard")
    url = dashboard.dashboard_url() if dashboard is not None else None
    info = {"node_ip_address": "127.0.0.1", "webui_url": url, "address": "local",
            "node_id": "local"}
    return RayContext(info, num_cpus=num_cpus, dashboard_url=url, address_info=dict(info),
                      python_version="%d.%d.%d" % sys.version_info[:3])

"""``python -m edge_gateway``: load the settings and the topology, then serve with uvicorn.

Environment: ``ENV`` (stage, default local), ``CFG_CUSTOMER_PATH`` (the platform's
cfg.customer.yml, deep-merged over the stage block), ``DTM_PATH`` (the delivered DTM).
Everything else is a config key; see edge_gateway/cfg.defaults.yml.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from edge_gateway.app import create_app
from edge_gateway.settings import dtm_path_from, load_gateway_settings
from edge_gateway.storage import StorageError
from edge_gateway.topology import TopologyError
from service_kit.layered_config import ConfigError


def main() -> None:
    if len(sys.argv) > 1:
        # No flags on purpose: every value is a config key, so the compose file and the
        # customer file stay the only places an installation is configured.
        print(__doc__, file=sys.stdout if sys.argv[1] in ("-h", "--help") else sys.stderr)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymodbus logs every refused connect itself; the pollers already report a failing device once.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        settings = load_gateway_settings()
        app = create_app(settings, dtm_path=dtm_path_from())
    except (ConfigError, TopologyError, StorageError) as exc:
        sys.exit(str(exc))
    http = settings.http
    uvicorn.run(
        app,
        host=http.host,
        port=http.port,
        log_level="info",
        access_log=False,
        # h11: h11_max_incomplete_event_size applies to it alone.
        http="h11",
        timeout_keep_alive=http.timeout_keep_alive_seconds,
        limit_concurrency=http.limit_concurrency,
        h11_max_incomplete_event_size=http.h11_max_incomplete_event_size,
    )


if __name__ == "__main__":
    main()

"""Start the ThingsBoard IoT Gateway on a configuration folder, offline: ``python run_gateway.py CONFIG_DIR``.

Runs with ``.venv-tb/bin/python`` (see ``make bench-deps``), never with EdgeLoop's venv. The one change to
the gateway: its update check (an HTTPS request to the vendor's update service at start and every hour) is
switched off, because the benchmark's traffic stays on this machine. Nothing on the data path is touched.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: run_gateway.py CONFIG_DIR  (holding tb_gateway.json, logs.json and the connector files)")
    config_dir = os.path.abspath(sys.argv[1])
    from thingsboard_gateway.tb_utility import tb_updater

    tb_updater.TBUpdater.check_for_new_version = lambda self: None  # type: ignore[method-assign]
    from thingsboard_gateway.gateway.tb_gateway_service import TBGatewayService

    os.chdir(config_dir)  # its log files are relative to the working directory
    TBGatewayService(os.path.join(config_dir, "tb_gateway.json"))


if __name__ == "__main__":
    main()

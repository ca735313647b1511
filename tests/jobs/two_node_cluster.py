"""A two-node Ray cluster on loopback for tests, in its own process.

    python tests/jobs/two_node_cluster.py     (with RAY_AUTH_MODE/RAY_AUTH_TOKEN in its env)

Ray reads RAY_AUTH_MODE once, when it is first imported, so a cluster with token auth cannot be
started from a test process that imported Ray already; this helper imports Ray after its
parent has set the variables. It prints one JSON line ({"dashboard": URL}), then answers
"placements" on stdin with the training workers' nodes, and shuts the cluster down (only the
processes it started) when stdin closes.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def placements(address: str) -> list[dict]:
    """Each Ray Train worker actor and the kiln_* resources of the node it ran on."""
    from ray.util.state import list_actors, list_nodes

    nodes = {n.node_id: n.resources_total for n in list_nodes(address=address)}
    return [
        {
            "class_name": a.class_name,
            "node": sorted(r for r in nodes.get(a.node_id, {}) if r.startswith("kiln_")),
        }
        for a in list_actors(address=address, detail=True, limit=1000)
        if "TrainWorker" in a.class_name
    ]


def main() -> int:
    import os

    from ray._private.services import get_node_ip_address
    from ray.cluster_utils import Cluster

    dashboard_port, gcs_port = _free_port(), _free_port()
    # Processes of this cluster that look for "the" cluster (Ray Train's placement-group
    # cleaner does) must find this one, not another Ray running on the same machine.
    os.environ["RAY_ADDRESS"] = f"{get_node_ip_address()}:{gcs_port}"
    small_store = 150 * 1024**2  # bytes; the job moves almost nothing through the object store
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "gcs_server_port": gcs_port,
            "num_cpus": 1,
            "resources": {"kiln_head": 1},
            "include_dashboard": True,
            "dashboard_port": dashboard_port,
            "object_store_memory": small_store,
            # Each node's agent gets its own port: the default (52365) is taken by any other
            # Ray on this machine, and the agent that loses the race leaves jobs unplaceable.
            "dashboard_agent_listen_port": _free_port(),
        },
    )
    second_temp = None
    try:
        # The second node keeps its files apart, as a real second machine would: sharing the
        # head's session folder, its runtime-env agent would delete the job's working directory
        # (its copy, it thinks) when its workers finish, under the driver still running there.
        # A short path: Ray's unix sockets live in it.
        second_temp = tempfile.mkdtemp(prefix="kiln-ray-", dir="/tmp")
        cluster.add_node(
            temp_dir=second_temp,
            num_cpus=1,
            resources={"kiln_second": 1},
            object_store_memory=small_store,
            dashboard_agent_listen_port=_free_port(),
        )
        cluster.wait_for_nodes()
        address = f"http://127.0.0.1:{dashboard_port}"
        print(json.dumps({"dashboard": address}), flush=True)
        for line in sys.stdin:
            if line.strip() == "placements":
                print(json.dumps(placements(address)), flush=True)
    finally:
        cluster.shutdown()
        if second_temp:
            shutil.rmtree(second_temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

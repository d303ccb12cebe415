"""Memory by process (``bench.footprint``): each process of a system's tree lands in the group its
command line says, consumer actors one by one, and Ray's share is told with and without the
dashboard modules that ``include_dashboard=False`` removes."""

from __future__ import annotations

from bench.footprint import group_of, grouped

MIB = 2**20
VENV = "/venv/lib/python3.11/site-packages/ray"


def test_each_process_lands_in_the_group_its_command_line_names() -> None:
    assert group_of("python -m streaminfer.cli run --bootstrap x", is_root=True, under_dashboard=False) == "driver"
    assert group_of(f"{VENV}/core/src/ray/gcs/gcs_server --log_dir=/tmp", False, False) == "Ray: GCS server"
    assert group_of(f"{VENV}/core/src/ray/raylet/raylet --raylet_socket_name=x", False, False) == "Ray: raylet"
    assert group_of(f"python {VENV}/dashboard/dashboard.py --host=127.0.0.1", False, False) == "Ray: dashboard head"
    assert group_of("ray-dashboard-NodeHead-0 (python -B -c ...)", False, True) == "Ray: dashboard modules"
    assert group_of("python -B -c from multiprocessing.forkserver import main", False, True) == "Ray: dashboard modules"
    assert group_of("ray::DashboardAgent", False, False) == "Ray: dashboard agent"
    assert group_of("ray::IDLE", False, False) == "Ray: idle workers"
    assert group_of("ray::ConsumerActor.run", False, False) == "consumer actor"
    assert group_of("ray::ServiceActor.start", False, False) == "side actor: ServiceActor"
    assert group_of("python -m bench.baselines batch-passthrough in out g m", False, False) == "child: python"


def test_ours_ray_and_ray_without_dashboard_modules_add_up_and_consumer_actors_are_counted_one_by_one() -> None:
    rows = [
        ("driver", 10, 100 * MIB), ("consumer actor", 12, 90 * MIB), ("consumer actor", 11, 80 * MIB),
        ("Ray: raylet", 20, 15 * MIB), ("Ray: dashboard modules", 30, 20 * MIB), ("Ray: dashboard modules", 31, 25 * MIB),
        ("Ray: dashboard head", 29, 70 * MIB),
    ]
    memory = grouped(rows)
    assert memory["groups"]["consumer actor 1"] == {"processes": 1, "pss_mib": 80.0}  # by pid
    assert memory["groups"]["consumer actor 2"] == {"processes": 1, "pss_mib": 90.0}
    assert memory["groups"]["Ray: dashboard modules"] == {"processes": 2, "pss_mib": 45.0}
    assert memory["ours_mib"] == 270.0
    assert memory["ray_mib"] == 130.0 and memory["ray_without_dashboard_mib"] == 85.0
    assert memory["total_mib"] == 400.0

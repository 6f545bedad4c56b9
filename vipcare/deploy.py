"""``vipcare deploy``: the same flows, on the same schedule, as Prefect deployments for workers.

The schedule is the one ``vipcare scheduler`` uses (:class:`Schedule`, from the
``VIPCARE_*`` settings): each cron expression becomes a Prefect ``Cron``
schedule in the operator's time zone. Deployments point at module entry points
(``vipcare.workers.care_day``…), so any worker with vipcare installed can run
them; the worker builds its configuration from its own environment. Also
creates the process work pool and the strict send-rate limits.
"""

from __future__ import annotations

from typing import Any

from vipcare.operations import quiet_prefect
from vipcare.scheduler.schedule import CARE_DAY, DISPATCH, ESCALATION, Schedule
from vipcare.settings import Settings


class DeployError(Exception):
    """Deploying needs a reachable Prefect server."""


def deploy_all(
    settings: Settings, *, work_pool: str, shards: int, lanes: int
) -> list[dict[str, Any]]:
    """Create or update every deployment; returns what was made (name, schedule, id)."""
    quiet_prefect()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound
    from prefect.schedules import Cron

    from vipcare import workers
    from vipcare.prefect_server import configured_api_url
    from vipcare.send_limits import ensure_limits

    if not configured_api_url():
        raise DeployError(
            "PREFECT_API_URL is not set: deployments live on a Prefect server; start one "
            "(`prefect server start`) and point PREFECT_API_URL at it"
        )
    schedule = Schedule.from_settings(settings)
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(work_pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"))
    limits = ensure_limits(settings.send_rate_per_second)
    plan: list[tuple[Any, str, str | None, dict[str, Any]]] = [
        (workers.care_day, "care-day", schedule.job(CARE_DAY).cron, {"shards": shards}),
        (workers.care_shard, "care-shard", None, {}),
        (workers.dispatch, "dispatch", schedule.job(DISPATCH).cron, {"lanes": lanes}),
        (workers.dispatch_lane, "dispatch-lane", None, {}),
        (workers.escalation, "escalation", schedule.job(ESCALATION).cron, {}),
    ]
    made = []
    for flow_fn, name, cron, parameters in plan:
        deployment = flow_fn.to_deployment(
            name=name,
            schedule=Cron(cron, timezone=schedule.timezone) if cron else None,
            parameters=parameters,
            description=(flow_fn.description or "").strip().splitlines()[0],
            entrypoint_type=EntrypointType.MODULE_PATH,
            tags=["vipcare"],
        )
        deployment_id = deployment.apply(work_pool_name=work_pool)
        made.append(
            {
                "name": f"{flow_fn.name}/{name}",
                "schedule": f"{cron} ({schedule.timezone})" if cron else "(started by its parent)",
                "work_pool": work_pool,
                "id": str(deployment_id),
            }
        )
    for limit in limits:
        made.append(
            {
                "name": f"concurrency limit {limit['name']}",
                "schedule": f"{limit['per_second']}/s, burst {limit['limit']}, strict",
                "work_pool": work_pool,
                "id": "",
            }
        )
    return made

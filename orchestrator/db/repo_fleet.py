"""Fleet inventory: architectures, software environments, nodes, devices (write and read side)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlafleet.kernels.bundle import Software
from mlafleet.worker.schemas import DeviceFingerprint

from ..schemas import ArchSummary, TunedKernel
from .models import Architecture, Device, Node, Recommendation, SoftwareEnv, Trial
from .types import utcnow
from .upsert import get_or_create, upsert

ALIVE_WINDOW = timedelta(minutes=2)


def env_key(software: Software) -> str:
    """The identity of a software environment (as ``DeviceFingerprint.env_key``)."""
    sw = software
    return f"driver={sw.driver};cuda={sw.cuda};rocm={sw.rocm};torch={sw.torch};triton={sw.triton}"


def ensure_arch(session: Session, *, name: str, vendor: str = "") -> int:
    """Id of architecture ``name``, created on first sight."""
    return get_or_create(
        session, Architecture, keys=["name"], values={"name": name, "vendor": vendor}
    )


def ensure_env(session: Session, *, software: Software) -> int:
    """Id of the software environment, created on first sight."""
    values = {"env_key": env_key(software), **software.model_dump()}
    return get_or_create(session, SoftwareEnv, keys=["env_key"], values=values)


def upsert_device(
    session: Session, *, fingerprint: DeviceFingerprint, ray_node_id: str | None = None
) -> int:
    """Record (or refresh) a device and its node, arch and env; returns the device id."""
    now = utcnow()
    arch_id = ensure_arch(session, name=fingerprint.arch, vendor=fingerprint.vendor)
    env_id = ensure_env(session, software=fingerprint.software)
    node_values: dict[str, object] = {"host": fingerprint.host, "last_seen": now, "first_seen": now}
    update = ["last_seen"]
    if ray_node_id is not None:
        node_values["ray_node_id"] = ray_node_id
        update.append("ray_node_id")
    node_id = upsert(session, Node, keys=["host"], values=node_values, update=update)
    return upsert(
        session,
        Device,
        keys=["device_key"],
        values={
            "device_key": fingerprint.device_key,
            "node_id": node_id,
            "arch_id": arch_id,
            "env_id": env_id,
            "name": fingerprint.name,
            "fingerprint": fingerprint.model_dump(mode="json"),
            "last_seen": now,
        },
        update=["node_id", "arch_id", "env_id", "name", "fingerprint", "last_seen"],
    )


def list_archs(session: Session) -> list[ArchSummary]:
    """Every architecture seen in the fleet: nodes, devices, software, what has been tuned."""
    archs = session.execute(select(Architecture).order_by(Architecture.name)).scalars().all()
    rows = session.execute(
        select(Device, Node.host, Node.last_seen, SoftwareEnv).join(Node).join(SoftwareEnv)
    ).all()
    by_arch: dict[int, list[tuple[Device, str, datetime, SoftwareEnv]]] = defaultdict(list)
    for dev, host, seen, env in rows:
        by_arch[dev.arch_id].append((dev, host, seen, env))
    recs = session.execute(
        select(
            Recommendation.arch_id,
            Recommendation.kernel,
            Recommendation.withdrawn,
            func.count(),
            func.max(Recommendation.measured_at),
        ).group_by(Recommendation.arch_id, Recommendation.kernel, Recommendation.withdrawn)
    ).all()
    trials = session.execute(
        select(Trial.arch_id, Trial.kernel, func.count()).group_by(Trial.arch_id, Trial.kernel)
    ).all()
    tuned: dict[int, dict[str, dict[str, object]]] = defaultdict(dict)
    for arch_id, kernel, withdrawn, count, last in recs:
        entry = tuned[arch_id].setdefault(kernel, {"kernel": kernel, "buckets": 0, "withdrawn": 0})
        entry["withdrawn" if withdrawn else "buckets"] = int(count)
        if last is not None:
            prev = entry.get("last_tuned_at")
            entry["last_tuned_at"] = max(last, prev) if isinstance(prev, datetime) else last
    for arch_id, kernel, count in trials:
        entry = tuned[arch_id].setdefault(kernel, {"kernel": kernel, "buckets": 0})
        entry["trials"] = int(count)
    now = utcnow()
    out = []
    for arch in archs:
        devs = by_arch.get(arch.id, [])
        hosts = sorted({host for _, host, _, _ in devs})
        last_seen = max((d.last_seen for d, _, _, _ in devs), default=None)
        alive = {host for d, host, _, _ in devs if now - d.last_seen <= ALIVE_WINDOW}
        envs = {env.env_key: env for _, _, _, env in devs}
        out.append(
            ArchSummary(
                arch=arch.name,
                vendor=arch.vendor,
                nodes=hosts,
                gpus=len(devs),
                gpu_names=sorted({d.name for d, _, _, _ in devs}),
                software=[
                    Software(
                        driver=e.driver, cuda=e.cuda, rocm=e.rocm, torch=e.torch, triton=e.triton
                    )
                    for _, e in sorted(envs.items())
                ],
                alive_nodes=len(alive),
                last_seen=last_seen,
                tuned=[TunedKernel.model_validate(v) for _, v in sorted(tuned[arch.id].items())],
            )
        )
    return out


def touch_devices(session: Session, *, device_keys: list[str]) -> None:
    """Mark devices (and their nodes) as seen now: the runner's heartbeat."""
    if not device_keys:
        return
    now = utcnow()
    devices = session.execute(select(Device).where(Device.device_key.in_(device_keys))).scalars()
    node_ids = set()
    for dev in devices:
        dev.last_seen = now
        node_ids.add(dev.node_id)
    for node in session.execute(select(Node).where(Node.id.in_(node_ids))).scalars():
        node.last_seen = now

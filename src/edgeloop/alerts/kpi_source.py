"""The KPIs of a running platform: lifecycle facts read from the store, computed by :mod:`edgeloop.alerts.kpi`.

What each stored record contributes (the unit a KPI counts is the alert; an incident's acknowledgement and
pages apply to its alerts):

- an alert: ``Opened`` at its first sample (the asset, its severity), ``RawSignals`` (its count: every raise
  merged into it is one raw signal), ``Resolved`` when it resolved;
- its incident: ``Acked`` at the incident's acknowledgement (for each of its alerts opened before it);
- a page (an incident's ``paged_at``): one ``Notified`` for the incident's first asset (a gateway incident:
  the gateway), so that a storm of 200 silences under one page counts as 200 raw signals per notification;
- a label: the ``Verdict`` (confirmed, false alarm or relabel) on its alert;
- a work order: ``WorkOrderOpened`` (with its downtime start) and ``WorkOrderClosed`` (downtime end):
  repairs, downtime, availability, MTBF and the reference failures of the detection lead time.
"""

from __future__ import annotations

from edgeloop.alerts import kpi
from edgeloop.alerts.model import Topology
from edgeloop.registry import Registry
from edgeloop.store.base import Store

__all__ = ["daily_kpis", "data_from", "kpi_timeline", "kpis", "topology_of"]

MAX_RECORDS = 1_000_000


def topology_of(registry: Registry) -> Topology:
    """Lines and sites of the registered assets (what KPIs group by)."""
    return Topology(line_of_asset={a.id: a.line for a in registry.assets.values()},
                    site_of_line={ln.id: ln.site for ln in registry.lines.values()})


async def kpi_timeline(store: Store, *, tenant: str | None, since_ms: int) -> kpi.Timeline:
    """The lifecycle facts of alerts opened since ``since_ms`` (and work orders open or closed since)."""
    tl = kpi.Timeline()
    alerts = await store.list_alerts(tenant=tenant, since_ms=since_ms, limit=MAX_RECORDS)
    incidents = {i.id: i for i in await store.list_incidents(tenant=tenant, opened_from=since_ms - kpi.DAY_MS,
                                                              limit=MAX_RECORDS)}
    for a in alerts:
        key = str(a.id)
        tl.add(kpi.Opened(ts=a.first_seen, alert=key, asset=a.asset, severity=a.severity.value))
        tl.add(kpi.RawSignals(ts=a.first_seen, asset=a.asset, count=a.count))
        if a.resolved_at is not None:
            tl.add(kpi.Resolved(ts=a.resolved_at, alert=key))
        inc = incidents.get(a.incident) if a.incident is not None else None
        if inc is not None and inc.acknowledged_at is not None:
            tl.add(kpi.Acked(ts=inc.acknowledged_at, alert=key, by=inc.acknowledged_by or ""))
    for inc in incidents.values():
        if inc.paged_at is not None and inc.paged_at >= since_ms:
            asset = inc.assets[0] if inc.kind == "asset" and inc.assets else inc.scope
            tl.add(kpi.Notified(ts=inc.paged_at, asset=asset))
    for label in await store.list_labels(tenant=tenant, since_ms=since_ms):
        tl.add(kpi.Verdict(ts=label.ts, alert=str(label.alert), kind=kpi.VerdictKind(label.verdict.value),
                           by=label.by, fault_type=label.fault_type))
    first_alert: dict[tuple[int, str], int] = {}  # a work order for an incident repairs its first alert there
    for a in sorted(alerts, key=lambda x: x.first_seen):
        if a.incident is not None:
            first_alert.setdefault((a.incident, a.asset), a.id)
    for w in await store.list_work_orders(tenant=tenant, since_ms=since_ms):
        linked = w.alert if w.alert is not None or w.incident is None else first_alert.get((w.incident, w.asset))
        tl.add(kpi.WorkOrderOpened(ts=w.opened_ms, work_order=w.id, asset=w.asset,
                                   alert=None if linked is None else str(linked), downtime_start=w.downtime_start))
        if w.closed_ms is not None:
            tl.add(kpi.WorkOrderClosed(ts=w.closed_ms, work_order=w.id, downtime_end=w.downtime_end))
    return tl


async def kpis(store: Store, registry: Registry, *, tenant: str | None, start_ms: int, end_ms: int,
               group: kpi.Group) -> dict[str, kpi.Kpis]:
    """The KPIs of ``[start_ms, end_ms)`` per group (asset, line, site or fleet) of ``tenant``'s assets."""
    topo = _topology(registry, tenant)
    tl = await kpi_timeline(store, tenant=tenant, since_ms=start_ms - 7 * kpi.DAY_MS)
    return kpi.compute_kpis(tl, topo, start_ms, end_ms, group,
                            data_from_ms=await data_from(store, registry, tenant))


async def data_from(store: Store, registry: Registry, tenant: str | None) -> int | None:
    """When ``tenant``'s data began (its devices' oldest stored sample); None before any data."""
    first = await store.first_sample_ms()
    times = [t for d, t in first.items()
             if tenant is None or ((dev := registry.devices.get(d)) is not None and dev.tenant == tenant)]
    return min(times, default=None)


async def daily_kpis(store: Store, registry: Registry, *, tenant: str | None, end_ms: int, days: int,
                     group: kpi.Group = "fleet") -> list[tuple[int, dict[str, kpi.Kpis]]]:
    """One KPI set per day for the ``days`` days before ``end_ms`` (oldest first): what the charts draw."""
    topo = _topology(registry, tenant)
    start = end_ms - days * kpi.DAY_MS
    tl = await kpi_timeline(store, tenant=tenant, since_ms=start - 7 * kpi.DAY_MS)
    began = await data_from(store, registry, tenant)
    return [(day, kpi.compute_kpis(tl, topo, day, day + kpi.DAY_MS, group, data_from_ms=began))
            for day in range(start, end_ms, kpi.DAY_MS)]


def _topology(registry: Registry, tenant: str | None) -> Topology:
    topo = topology_of(registry)
    if tenant is None:
        return topo
    mine = {a for a in topo.line_of_asset if registry.tenant_of("asset", a) == tenant}
    return Topology(line_of_asset={a: ln for a, ln in topo.line_of_asset.items() if a in mine},
                    site_of_line=topo.site_of_line)

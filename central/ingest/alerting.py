"""The alert engine in ingest: per battery, the lifecycle state of each alert type, kept in memory
and rebuilt from the store, and the live events of what changed.

State. ``Tracked`` holds, per battery ingest has met, its site and model, resistance baseline, RUL,
latest SoH, status word, and per alert type the lifecycle's ``AlertState`` and the ID of the active
row. It is loaded once from the store (``alert_rows.load``) and bounded by the fleet's size; only
``clear_since`` (when a clear run started) exists in memory alone, and losing it restarts a hold.

Transactions. The caller opens one transaction per ingest batch (or sweep) and calls
``begin``; the engine reads and writes through its session, so alert rows commit with the
telemetry that caused them. ``commit`` then emits the live events gathered; ``rollback`` drops
them and forgets the batteries touched, which the next batch reloads from the rows (the truth).

Cost. Each battery of a batch is judged once, on its new readings (the rules take the latest
valid value of each measurement), so a backlog of many readings per battery costs little more
than a live batch of one each; a spike inside a backlog batch that is gone by its end is not seen.
The resistance baseline is the median of the block's first ``baseline_readings`` valid readings in
the store: counted in memory until there are enough, then read and kept in ``battery_analytics``.

Live readings. Each new reading of a batch becomes a ``telemetry_update``, oldest first, so a
live chart misses none when two polls land in one batch. A backlog (an agent back from an outage
delivers hours at once) sends only each battery's newest ``LIVE_READINGS_PER_BATCH``: a live feed
is no replay channel, and clients fetch the gap through the telemetry endpoint.

Manual resolves. The API (maybe in another process) resolves a row by setting ``resolved_at``.
Before deciding for a battery with an active alert the engine checks its rows, and every change of
an alert applies only while it is still active; either way a row found resolved turns the state
into ``manually_resolved``. At load, each type's alert resolved within ``rearm_s`` does the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy.orm import Session

from central.alerts import (
    Action,
    ActiveAlert,
    AlertSettings,
    AlertState,
    AlertType,
    BatteryContext,
    Condition,
    Decision,
    Severity,
    baseline,
    decide,
    evaluate,
    evaluate_communication,
    manually_resolved,
    newest_reading,
)
from central.battery_status import Status, battery_status, worst_severity
from central.db.models import Alert
from central.ingest import alert_rows
from central.ingest.alert_rows import Known, ResolvedRow
from central.live_events import LiveEvents
from central.wire_format import alert_json
from common.schemas import Reading
from common.timeutil import to_rfc3339
from common.units import MEASUREMENTS

log = logging.getLogger(__name__)

# Readings per battery one batch sends live: a few polls' worth (a slow batch, an agent catching
# up a minute), not a backlog.
LIVE_READINGS_PER_BATCH = 10
_TS = attrgetter("ts")

Emit = Callable[[LiveEvents], None]


@dataclass(frozen=True)
class RulUpdate:
    """A new RUL estimate of one battery: ``rul_days`` None is no end of life in sight.
    ``baseline_ohm``: a replaced block's own resistance baseline, stored already."""

    battery_id: str
    rul_days: float | None
    as_of: datetime
    baseline_ohm: float | None = None


@dataclass
class Tracked:
    """What the engine keeps of one battery (see the module's docstring)."""

    location_id: str
    model: str | None
    baseline_ohm: float | None
    rul_days: float | None
    rul_as_of: datetime | None
    latest_ts: datetime | None
    soh_pct: float | None
    status: Status = Status.UNKNOWN
    # Valid resistances stored so far while there is no baseline; None: not counted yet.
    resistances: int | None = None
    model_stale: bool = False
    states: dict[AlertType, AlertState] = field(default_factory=dict)
    rows: dict[AlertType, str] = field(default_factory=dict)

    def worst(self) -> str | None:
        return worst_severity([s.active.severity.value for s in self.active_states()])

    def active_states(self) -> list[AlertState]:
        return [s for s in self.states.values() if s.active is not None]

    def current_status(self) -> Status:
        return battery_status(self.latest_ts is not None, self.soh_pct, self.worst())


class AlertEngine:
    """Evaluates rules and runs the lifecycle for the batteries of each ingest transaction."""

    def __init__(self, settings: AlertSettings, *, live: bool = True) -> None:
        """``live``: whether any client can hear the events (without, none are built)."""
        self.settings = settings
        self._live = live
        self._tracked: dict[str, Tracked] = {}
        self._touched: set[str] = set()
        self._pending: list[Emit] = []
        self._rul: dict[str, RulUpdate] = {}  # waiting for a transaction to judge them
        self._rul_taken: list[RulUpdate] = []  # judged by the open transaction

    @property
    def tracked(self) -> dict[str, Tracked]:
        return self._tracked

    # ------------------------------------------------------------------ transactions

    def begin(self) -> None:
        self._touched.clear()
        self._pending.clear()
        self._rul_taken.clear()

    def commit(self, events: LiveEvents) -> None:
        """After the transaction committed: emit what it changed (a failing live feed never
        stops ingest: the rows are stored, clients catch up through the API)."""
        pending, self._pending = self._pending, []
        self._touched.clear()
        self._rul_taken.clear()
        for emit in pending:
            try:
                emit(events)
            except Exception:  # any error of the live feed's transport
                log.exception("live event not delivered")

    def rollback(self) -> None:
        """The transaction failed: forget what it touched; the rows are reloaded next time."""
        for battery_id in self._touched:
            self._tracked.pop(battery_id, None)
        self._touched.clear()
        self._pending.clear()
        for update in self._rul_taken:
            self.offer_rul(update)
        self._rul_taken.clear()

    def offer_rul(self, update: RulUpdate) -> None:
        """A new estimate, to be evaluated in the next transaction."""
        held = self._rul.get(update.battery_id)
        if held is None or update.as_of >= held.as_of:
            if held is not None and update.baseline_ohm is None:  # a new baseline is kept
                update = replace(update, baseline_ohm=held.baseline_ohm)
            self._rul[update.battery_id] = update

    def forget_models(self, site_id: str) -> None:
        """A birth of ``site_id`` may have changed its batteries' models: look them up again."""
        for tracked in self._tracked.values():
            if tracked.location_id == site_id:
                tracked.model_stale = True

    # ------------------------------------------------------------------ entry points

    def on_readings(
        self, session: Session, grouped: Mapping[str, list[Reading]], now: datetime
    ) -> None:
        """The batch's newly stored readings, per battery: live updates, then its rules."""
        self._track(session, list(grouped), now)
        self._reconcile(session, grouped)
        self._baselines(session, grouped, now)
        for battery_id, group in grouped.items():
            self._readings(battery_id, self._tracked[battery_id], group, session)
        self._evaluate_rul(session, now)
        self._statuses(grouped, now)

    def sweep(self, session: Session, now: datetime) -> None:
        """communication_lost for every known battery, judged at ``now``; pending RUL too."""
        silences = alert_rows.silences(session)
        offline = alert_rows.offline_sites(session)
        ids = [s.battery_id for s in silences]
        self._track(session, ids, now)
        self._reconcile(session, ids)
        for silence in silences:
            tracked = self._tracked[silence.battery_id]
            reference = silence.known_since or silence.last_data_at
            if reference is None:
                continue
            condition = evaluate_communication(
                now,
                self.settings,
                last_data_at=silence.last_data_at,
                known_since=reference,
                site_offline_since=offline.get(tracked.location_id),
            )
            self._decide(session, silence.battery_id, tracked, condition)
        self._evaluate_rul(session, now)
        self._statuses(ids, now)

    # ------------------------------------------------------------------ loading

    def _track(self, session: Session, battery_ids: Sequence[str], now: datetime) -> None:
        """Load the batteries not tracked yet; refresh models a birth may have changed."""
        self._touched.update(battery_ids)
        missing = [b for b in battery_ids if b not in self._tracked]
        if missing:
            since = now - timedelta(seconds=self.settings.rearm_s)
            for battery_id, known in alert_rows.load(session, missing, since).items():
                self._tracked[battery_id] = self._rebuild(known)
        stale = [b for b in battery_ids if self._tracked[b].model_stale]
        if stale:
            found = alert_rows.models(session, stale)
            for battery_id in stale:
                tracked = self._tracked[battery_id]
                tracked.model_stale = False
                if battery_id in found:
                    tracked.location_id, tracked.model = found[battery_id]

    def _rebuild(self, known: Known) -> Tracked:
        tracked = Tracked(
            location_id=known.location_id,
            model=known.model,
            baseline_ohm=known.baseline_ohm,
            rul_days=known.rul_days,
            rul_as_of=known.rul_as_of,
            latest_ts=known.latest_ts,
            soh_pct=known.soh_pct,
        )
        for alert_type, row in known.active.items():
            active = ActiveAlert(row.severity, row.triggered_at, row.actual_value)
            tracked.states[alert_type] = AlertState(active=active)
            tracked.rows[alert_type] = row.id
        for alert_type, row in known.resolved.items():
            # Resolved recently (by an engineer, or by the engine before a restart): err
            # towards not raising it again at once.
            tracked.states[alert_type] = manually_resolved(
                AlertState(), row.resolved_at, row.severity
            )
        tracked.status = tracked.current_status()
        if known.rul_as_of is not None:
            self.offer_rul(RulUpdate(known.battery_id, known.rul_days, known.rul_as_of))
        return tracked

    def _reconcile(self, session: Session, battery_ids: Iterable[str]) -> None:
        """Take in the manual resolves of the active alerts of ``battery_ids``."""
        row_ids = [
            row_id
            for battery_id in battery_ids
            for row_id in self._tracked[battery_id].rows.values()
        ]
        if row_ids:
            for row in alert_rows.resolved_among(session, row_ids):
                self._resolved_elsewhere(self._tracked[row.battery_id], row)

    @staticmethod
    def _resolved_elsewhere(tracked: Tracked, row: ResolvedRow) -> None:
        state = tracked.states.get(row.alert_type, AlertState())
        tracked.states[row.alert_type] = manually_resolved(state, row.resolved_at, row.severity)
        tracked.rows.pop(row.alert_type, None)

    # ------------------------------------------------------------------ evaluation

    def _readings(
        self, battery_id: str, tracked: Tracked, group: list[Reading], session: Session
    ) -> None:
        if self._live:
            in_order = sorted(group, key=_TS)
            newest = in_order[-1]
            for reading in in_order[-LIVE_READINGS_PER_BATCH:]:
                self._pending.append(_telemetry_update(tracked.location_id, reading))
        else:
            newest = newest_reading(group)
        if tracked.latest_ts is None or newest.ts > tracked.latest_ts:
            tracked.latest_ts, tracked.soh_pct = newest.ts, newest.soh_pct
        context = BatteryContext(baseline_resistance_ohm=tracked.baseline_ohm)
        thresholds = self.settings.for_model(tracked.model)
        for condition in evaluate(context, group, thresholds):
            self._decide(session, battery_id, tracked, condition)

    def _baselines(
        self, session: Session, grouped: Mapping[str, list[Reading]], now: datetime
    ) -> None:
        """Count the valid resistances of blocks without a baseline until there are enough, then
        take the median of the store's first ones (the batch is stored already) and keep it."""
        need = self.settings.baseline_readings
        ask = []
        for battery_id, group in grouped.items():
            tracked = self._tracked[battery_id]
            if tracked.baseline_ohm is not None:
                continue
            valid = sum(1 for r in group if (r.internal_resistance or 0.0) > 0)
            if valid == 0:
                continue
            if tracked.resistances is not None and tracked.resistances + valid < need:
                tracked.resistances += valid
            else:
                ask.append(battery_id)
        if not ask:
            return
        values = {}
        for battery_id, early in alert_rows.first_resistances(session, ask, need).items():
            value = baseline(early, need)
            if value is None:
                self._tracked[battery_id].resistances = len(early)
            else:
                values[battery_id] = value
        if values:
            for battery_id, ohm in alert_rows.save_baselines(session, values, now).items():
                self._tracked[battery_id].baseline_ohm = ohm
                self._tracked[battery_id].resistances = None

    def _evaluate_rul(self, session: Session, now: datetime) -> None:
        """Judge the RUL estimates waiting, loading their batteries if need be."""
        if not self._rul:
            return
        updates = list(self._rul.values())
        self._rul.clear()
        self._rul_taken.extend(updates)
        ids = [u.battery_id for u in updates]
        self._track(session, ids, now)
        for battery_id in ids:  # loading offered the stored estimate again: judged here
            self._rul.pop(battery_id, None)
        self._reconcile(session, ids)
        for update in updates:
            tracked = self._tracked[update.battery_id]
            if tracked.rul_as_of is None or update.as_of >= tracked.rul_as_of:
                tracked.rul_days, tracked.rul_as_of = update.rul_days, update.as_of
            if update.baseline_ohm is not None:  # a replaced block: drift from its own
                tracked.baseline_ohm, tracked.resistances = update.baseline_ohm, None
            context = BatteryContext(rul_days=tracked.rul_days, rul_as_of=tracked.rul_as_of)
            thresholds = self.settings.for_model(tracked.model)
            for condition in evaluate(context, (), thresholds):
                self._decide(session, update.battery_id, tracked, condition)
        self._statuses(ids, now)

    # ------------------------------------------------------------------ lifecycle

    def _decide(
        self, session: Session, battery_id: str, tracked: Tracked, condition: Condition
    ) -> None:
        state = tracked.states.get(condition.alert_type, AlertState())
        decision = decide(state, condition, self.settings)
        tracked.states[condition.alert_type] = decision.state
        if decision.action is not Action.NOTHING:
            self._apply(session, battery_id, tracked, decision)

    def _apply(
        self, session: Session, battery_id: str, tracked: Tracked, decision: Decision
    ) -> None:
        alert_type = decision.condition.alert_type
        action = decision.action
        if action is Action.RAISE:
            row = alert_rows.insert_alert(
                session, battery_id, tracked.location_id, decision.condition
            )
            if row is None:
                self._adopt(session, battery_id, tracked, decision)
                return
            tracked.rows[alert_type] = row.id
        else:
            row_id = tracked.rows.get(alert_type)
            if action is Action.RESOLVE:
                tracked.rows.pop(alert_type, None)
                values: dict[str, Any] = {"resolved_at": decision.at}
            elif action is Action.ESCALATE:
                values = alert_rows.escalation(decision.condition)
            else:
                values = alert_rows.worsening(decision.condition)
            row = None if row_id is None else alert_rows.change_alert(session, row_id, values)
            if row is None:
                if action is not Action.RESOLVE and row_id is not None:
                    self._changed_elsewhere(session, tracked, alert_type, row_id)
                return
        if action is not Action.UPDATE:
            log.info(
                "%s %s %s %s: %s",
                action.value,
                row.severity,
                alert_type.value,
                battery_id,
                row.message,
            )
            if self._live:
                self._pending.append(_alert_event(row))

    def _adopt(
        self, session: Session, battery_id: str, tracked: Tracked, decision: Decision
    ) -> None:
        """Another process raised this (battery, type) first: follow its row."""
        alert_type = decision.condition.alert_type
        row = alert_rows.active_alert(session, battery_id, alert_type)
        if row is None:
            tracked.states[alert_type] = AlertState(observed_at=decision.state.observed_at)
            return
        active = ActiveAlert(Severity(row.severity), row.triggered_at, row.actual_value)
        tracked.states[alert_type] = AlertState(
            active=active, observed_at=decision.state.observed_at
        )
        tracked.rows[alert_type] = row.id

    def _changed_elsewhere(
        self, session: Session, tracked: Tracked, alert_type: AlertType, row_id: str
    ) -> None:
        """An ESCALATE or UPDATE found its row resolved: an engineer resolved it meanwhile."""
        for row in alert_rows.resolved_among(session, [row_id]):
            self._resolved_elsewhere(tracked, row)

    # ------------------------------------------------------------------ status

    def _statuses(self, battery_ids: Iterable[str], now: datetime) -> None:
        for battery_id in battery_ids:
            tracked = self._tracked[battery_id]
            status = tracked.current_status()
            if status is not tracked.status:
                previous, tracked.status = tracked.status, status
                if self._live:
                    self._pending.append(_status_update(battery_id, tracked, previous, now))


def _telemetry_update(location_id: str, reading: Reading) -> Emit:
    data = {name: getattr(reading, name) for name in MEASUREMENTS}
    stamp = to_rfc3339(reading.ts)
    return lambda events: events.telemetry_update(location_id, reading.battery_id, data, stamp)


def _alert_event(row: Alert) -> Emit:
    """The API's alert object, built now (inside the transaction) and sent after commit."""
    payload = {**alert_json(row), "location_id": row.location_id}
    location_id, battery_id = row.location_id, row.battery_id
    return lambda events: events.alert(location_id, battery_id, payload)


def _status_update(battery_id: str, tracked: Tracked, previous: Status, now: datetime) -> Emit:
    data = {
        "status": tracked.status.value,
        "previous_status": previous.value,
        "soh_pct": tracked.soh_pct,
        "active_alerts": len(tracked.active_states()),
        "worst_severity": tracked.worst(),
    }
    location_id, stamp = tracked.location_id, to_rfc3339(now)
    return lambda events: events.battery_status_update(location_id, battery_id, data, stamp)

"""Scheduling strategies, under Ray's module path.

On one machine every strategy that names this node, or none, schedules as
"DEFAULT" does: "DEFAULT", "SPREAD", and NodeAffinitySchedulingStrategy
for this node.  A hard affinity (soft=False) to another node can never be
met: as in Ray, a task's refs raise TaskUnschedulableError at once; an
actor raises ActorUnschedulableError (here at .remote(), where Ray raises it
at the actor's first use).  PlacementGroupSchedulingStrategy charges the
call to a placement group's reservation (nanoray.util.placement_group)."""

__all__ = ["NodeAffinitySchedulingStrategy", "NodeLabelSchedulingStrategy",
           "PlacementGroupSchedulingStrategy"]


class PlacementGroupSchedulingStrategy:
    """Run in a placement group (charged to its reservation); with
    placement_group_capture_child_tasks, the tasks and actors it submits
    run in it too."""

    def __init__(self, placement_group, placement_group_bundle_index=-1,
                 placement_group_capture_child_tasks=None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def _validate(self):
        from nanoray.util.placement_group import PlacementGroup
        pg = self.placement_group
        if not isinstance(pg, PlacementGroup):
            raise TypeError("PlacementGroupSchedulingStrategy needs a PlacementGroup, got %r"
                            % (type(pg).__name__,))
        i = self.placement_group_bundle_index
        if isinstance(i, bool) or not isinstance(i, int) or not -1 <= i < pg.bundle_count:
            raise ValueError("placement_group_bundle_index %r is out of range: the group has "
                             "%d bundles (-1: any)" % (i, pg.bundle_count))


class NodeAffinitySchedulingStrategy:
    """Run on the node with this id (get_runtime_context().get_node_id());
    soft=True falls back to any node."""

    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable


class NodeLabelSchedulingStrategy:
    """Run on nodes whose labels match (this node has no labels)."""

    def __init__(self, hard, *, soft=None):
        self.hard = hard
        self.soft = soft


def check(strategy):
    """Validates a scheduling_strategy option; returns True when the call can
    run here, False when it can never be scheduled (a hard affinity to
    another node, or hard labels)."""
    if strategy is None or strategy in ("DEFAULT", "SPREAD"):
        return True
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        strategy._validate()
        return True
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        if strategy.soft:
            return True
        from nanoray import _api
        b = _api._get_backend()
        return strategy.node_id == "%056x" % b.region.session
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        return not strategy.hard
    if isinstance(strategy, str):
        raise ValueError("scheduling_strategy must be \"DEFAULT\", \"SPREAD\" or a strategy "
                         "object, got %r" % (strategy,))
    raise TypeError("scheduling_strategy must be \"DEFAULT\", \"SPREAD\" or a strategy object, "
                    "got %r" % (type(strategy).__name__,))


def normalize(opts):
    """The options' strategy, with Ray's older placement_group= options
    turned into a PlacementGroupSchedulingStrategy; None for DEFAULT."""
    s = opts.get("scheduling_strategy")
    pg = opts.get("placement_group")
    if pg not in (None, "default"):
        s = PlacementGroupSchedulingStrategy(
            pg, opts.get("placement_group_bundle_index", -1) if
            opts.get("placement_group_bundle_index") is not None else -1,
            opts.get("placement_group_capture_child_tasks"))
    return None if s in (None, "DEFAULT", "SPREAD") else s

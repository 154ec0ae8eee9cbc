"""Placement groups, under Ray's module path: not implemented yet.

Importing works, so a script written for Ray gets as far as its first use,
where a clear NotImplementedError says so.  On one machine every bundle
would land on this node; what placement groups would add here is the
reservation of resources for a group of tasks and actors."""

__all__ = ["PlacementGroup", "get_current_placement_group", "get_placement_group",
           "placement_group", "placement_group_table", "remove_placement_group"]

_WHY = ("nanoray has no placement groups yet (%s): on one machine every bundle would be on "
        "this node; reserve with num_cpus/num_gpus/resources on the tasks and actors instead")


class PlacementGroup:
    """A placement group handle (none can be made yet)."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(_WHY % "PlacementGroup")


def placement_group(bundles, strategy="PACK", name="", lifetime=None, **kwargs):
    raise NotImplementedError(_WHY % "placement_group()")


def remove_placement_group(placement_group):
    raise NotImplementedError(_WHY % "remove_placement_group()")


def get_placement_group(placement_group_name):
    raise NotImplementedError(_WHY % "get_placement_group()")


def placement_group_table(placement_group=None):
    """No placement groups exist: an empty table."""
    return {}


def get_current_placement_group():
    """The placement group the caller runs in: never one."""
    return None

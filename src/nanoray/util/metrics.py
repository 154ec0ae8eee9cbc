"""Counter, Gauge and Histogram with Ray's API (ray.util.metrics), so that
code that records application metrics runs unchanged.  Ray exports them to
Prometheus through its metrics agent; nanoray has no agent, so each metric
keeps its values in the process that records them (readable, for tests and
debugging, from ``metric.values()``: tags as a sorted tuple of pairs ->
the counter's sum, the gauge's last value, or the histogram's
{"count", "sum", "buckets"}, buckets counting the observations at or
below each boundary and, last, those above every one)."""

import bisect
import numbers
import threading

__all__ = ["Counter", "Gauge", "Histogram", "Metric"]


def _check_str_map(tags, what):
    for k, v in tags.items():
        if not isinstance(k, str):
            raise TypeError("Tag keys must be str, got %s." % (type(k),))
        if not isinstance(v, str):
            raise TypeError("Tag values must be str, got %s." % (type(v),))


class Metric:
    """What the three kinds share: a name, tag keys and default tags."""

    def __init__(self, name, description="", tag_keys=None):
        if not isinstance(name, str) or not name:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        if tag_keys is None:
            tag_keys = ()
        if not isinstance(tag_keys, tuple):
            raise TypeError("tag_keys should be a tuple type, got: %s" % (type(tag_keys),))
        for key in tag_keys:
            if not isinstance(key, str):
                raise TypeError("Tag keys must be str, got %s." % (type(key),))
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags = {}
        self._lock = threading.Lock()
        self._values = {}

    def set_default_tags(self, default_tags):
        """Tags used where a record gives none; returns the metric."""
        _check_str_map(default_tags, "default")
        for key in default_tags:
            if key not in self._tag_keys:
                raise ValueError("Unrecognized tag key %s." % (key,))
        self._default_tags = dict(default_tags)
        return self

    def _tags(self, tags):
        final = dict(self._default_tags)
        if tags:
            _check_str_map(tags, "record")
            final.update(tags)
        missing = [k for k in self._tag_keys if k not in final]
        if missing:
            raise ValueError("Missing value for tag key(s): %s." % ",".join(missing))
        return tuple(sorted(final.items()))

    @staticmethod
    def _number(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError("value must be int or float, got %s." % (type(value),))
        return float(value)

    def values(self):
        """What this process recorded, by tags (a copy)."""
        with self._lock:
            return {k: (dict(v, buckets=list(v["buckets"])) if isinstance(v, dict) else v)
                    for k, v in self._values.items()}

    @property
    def info(self):
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def __reduce__(self):
        # A copy sent to a task records there; as in Ray, neither the values
        # nor the default tags go with it.
        return (type(self), self._init_args())

    def _init_args(self):
        return (self._name, self._description, self._tag_keys)


class Counter(Metric):
    """A cumulative sum: inc(value > 0)."""

    def inc(self, value=1.0, tags=None):
        value = self._number(value)
        if value <= 0:
            raise ValueError("value must be >0, got %s" % (value,))
        key = self._tags(tags)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value


class Gauge(Metric):
    """The last value set: set(value) (set(None) changes nothing, as in Ray)."""

    def set(self, value, tags=None):
        if value is None:
            return
        value = self._number(value)
        key = self._tags(tags)
        with self._lock:
            self._values[key] = value


class Histogram(Metric):
    """Observations counted into buckets whose upper bounds are boundaries."""

    def __init__(self, name, description="", boundaries=None, tag_keys=None):
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError("boundaries argument should be provided when using the "
                             "Histogram class. e.g., Histogram(\"name\", boundaries=[1.0, 2.0])")
        for b in boundaries:
            if isinstance(b, bool) or not isinstance(b, numbers.Real) or b <= 0:
                raise ValueError("Invalid `boundaries` argument: %r. Use positive values, "
                                 "e.g., [0.1, 1.0, 10.0]" % (boundaries,))
        self._boundaries = sorted(boundaries)

    def observe(self, value, tags=None):
        value = self._number(value)
        key = self._tags(tags)
        i = bisect.bisect_left(self._boundaries, value)     # the first bound >= value
        with self._lock:
            v = self._values.get(key)
            if v is None:
                v = self._values[key] = {"count": 0, "sum": 0.0,
                                         "buckets": [0] * (len(self._boundaries) + 1)}
            v["count"] += 1
            v["sum"] += value
            v["buckets"][i] += 1

    @property
    def info(self):
        return dict(super().info, boundaries=list(self._boundaries))

    def _init_args(self):
        return (self._name, self._description, self._boundaries, self._tag_keys)

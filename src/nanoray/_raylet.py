"""The ref types under the module path some Ray programs import them from
(``from nanoray._raylet import ObjectRefGenerator``); the public names are
nanoray.ObjectRef, nanoray.ObjectRefGenerator and
nanoray.DynamicObjectRefGenerator."""

from nanoray import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator

__all__ = ["DynamicObjectRefGenerator", "ObjectRef", "ObjectRefGenerator"]

"""Where a document lives: one placement function for every path that writes or finds by id."""

from .ring import NUM_SLOTS, Placement, slot_of

__all__ = ["NUM_SLOTS", "Placement", "slot_of"]

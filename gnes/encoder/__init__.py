"""Encoders turn texts into fixed-size float32 vectors; see `base.BaseEncoder`."""

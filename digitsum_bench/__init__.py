"""digitsum-bench: the digit-sum reports' methods, trained the same way and measured on the same data."""

# Part of every record's key: bump it when a change alters what training computes,
# so that records made by older code are not mixed with new ones.
__version__ = "0.1.0"

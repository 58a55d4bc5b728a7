"""Signature schemes: one module per scheme family, registered by name in ``registry``."""

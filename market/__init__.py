"""The trading domain: Binance formats, ticks, bars, indicators, state, env.

Ray-free and torch-free: nothing in this package imports ``ray`` or ``torch``.
"""

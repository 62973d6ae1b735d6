"""History for training and evaluation: recorded and fetched kline files, public-data downloads, snapshots.

Reads and freezes data; never builds states (that is `market/`).
"""

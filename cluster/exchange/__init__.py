"""The local replay exchange: Binance's websocket and REST protocols on 127.0.0.1 over recorded captures.

`capture` reads the recordings, `ws` and `rest` speak the protocols, `server` runs them; nothing here trades.
"""

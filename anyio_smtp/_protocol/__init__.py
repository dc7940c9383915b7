"""The SMTP protocol without I/O: replies, capabilities, commands, message data, states.

Nothing in this package imports anyio, socket or ssl.
"""

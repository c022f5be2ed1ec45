"""A local fake of Gupshup's WhatsApp API, with a control API for development and tests."""

from sandbox.server import RunningSandbox, create_app, start_sandbox

__all__ = ["RunningSandbox", "create_app", "start_sandbox"]

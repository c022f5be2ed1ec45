"""The five services, each its own process (`python -m services.<name>`).

Three layers, and nothing between services: a service imports `shared/` and its own
package, never another service (`tests/unit/test_layout.py`). Each `__main__` is thin: it
builds the service and answers its table of subscriptions (`shared.broker.Subscriptions`),
one handler per message model, so the code that handles any kind is one import away.
Handlers receive typed events and raise `Defer`, `PermanentError` or anything else; the
broker layer decides what each means (delay tier, dead letter, retry with backoff).
"""

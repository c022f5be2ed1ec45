"""What more than one service uses.

The broker (`broker.py`, the only module that speaks AMQP), the store and its repositories
(`store.py`, `repositories/`, the only code that opens a collection; they answer typed
records), the versioned models that cross the broker (`models.py`), the exceptions whose
meaning the broker decides (`errors.py`), settings, logging, the metrics several services
share, crypto, phones, WhatsApp's rules (`whatsapp.py`), onboarding, and the Gupshup client,
parsers and attribution. Nothing here imports a service.
"""

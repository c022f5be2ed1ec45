"""Follow-ups to quiet leads and appointment reminders: planned after replies, swept when due."""

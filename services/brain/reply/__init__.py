"""The reply path: a thread's unanswered messages to one stored, published reply."""

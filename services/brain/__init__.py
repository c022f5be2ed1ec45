"""The brain: answers leads in the agent's voice, and follows up when they go quiet.

Grouped by what it does, each group importing only downwards (no cycles):
- `reply/`: a thread's work item to a stored, published reply: the handler (lease, burst,
  acting on the decision), the pipeline and its five layers (Understand and Compose run on
  an engine; Recall, Decide and Guard are rules), their types in `reply/model.py`, and how
  times, free slots and places are read (`when`, `slots`, `geo`).
- `engines/`: the two implementations of Understand and Compose: `offline` (rules and the
  phrase table of every language it speaks, `phrases`) and `anthropic_engine` (with its
  `prompts`).
- `followups/`: planning follow-ups and reminders after a reply (`scheduler`), sending them
  when due (`sweeper`) and what they say (`texts`).
- `repositories.py` opens the repositories both workers use; the send commands they publish
  are built by `shared.replies.send_command`; `metrics.py` holds the brain's own metrics.
"""

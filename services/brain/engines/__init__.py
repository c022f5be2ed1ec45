"""The engines behind Understand and Compose: offline rules, or the Anthropic API."""

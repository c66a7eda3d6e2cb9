"""Converters between OpenAI chat completions and Anthropic Messages, both ways: requests,
JSON answers, stream events, stop reasons and usage. Pure code, no I/O: the gateway calls
them when an upstream does not speak the client's API."""

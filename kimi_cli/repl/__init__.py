"""The interactive chat: a prompt_toolkit session over the same engine and renderers as `kimi ask`."""

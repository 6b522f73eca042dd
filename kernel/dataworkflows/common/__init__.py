"""Small building blocks every layer uses: errors, the clock, bounded JSON parsing, log
context, pagination, validation messages, JSON schemas of plugin models, and the redaction
of secret values from everything the engine writes and logs."""

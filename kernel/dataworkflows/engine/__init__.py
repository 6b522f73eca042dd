"""Running workflows: definitions and their compiled plans, the conductor that executes
a claimed run node by node, templating and the worker that claims runs."""

"""Use cases shared by the HTTP API, the CLI and trigger plugins: workflows (store,
versions, audit), runs, triggers and the scheduler that fires time-based triggers."""

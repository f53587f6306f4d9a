"""The `dispatch-engine` command line: `main` (service processes, keys, the local queue)
and one module per further command group (`incidents`)."""

"""The stacks: stateful data (network, database, secrets) and the application on top."""

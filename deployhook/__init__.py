"""deployhook: a push-to-deploy receiver for self-hosted Compose stacks."""

__version__ = "0.1.0"

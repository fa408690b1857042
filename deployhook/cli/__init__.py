"""The `deployhook` command line (click): each command's module, registered here.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error (one
line on stderr naming the file, the key and what is wrong). docs/cli.md lists them.
"""

from __future__ import annotations

import click

from deployhook.cli import deliver, deliveries, hook, jobs, repos, serve, status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deployhook")
def main() -> None:
    """deployhook: push-to-deploy for self-hosted Compose stacks."""


for command in (
    serve.serve,
    serve.worker,
    serve.web,
    repos.repos,
    jobs.deploy,
    jobs.rollback,
    jobs.hold,
    jobs.release,
    jobs.cancel,
    status.status,
    status.logs,
    deliveries.deliveries,
    hook.hook,
    deliver.deliver,
):
    main.add_command(command)

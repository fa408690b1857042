"""The `deployhook` command line (click): each command's module, registered here.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error (one
line on stderr naming the file, the key and what is wrong). docs/cli.md lists them.
"""

from __future__ import annotations

import os

import click

from deployhook.cli import deliver, deliveries, hook, jobs, repos, serve, status

# What `git rev-parse --local-env-vars` lists: a git hook (a push mirror's post-receive
# running `deployhook deploy`) exports its own repository's location, and deployhook's git
# would act on that repository instead of a repo's checkout.
GIT_LOCAL_ENV = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
    "GIT_QUARANTINE_PATH",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deployhook")
def main() -> None:
    """deployhook: push-to-deploy for self-hosted Compose stacks."""
    for name in GIT_LOCAL_ENV:
        os.environ.pop(name, None)


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

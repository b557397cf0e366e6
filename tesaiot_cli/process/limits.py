"""Process resource limits a command checks before it starts (no I/O beyond getrlimit/setrlimit)."""

from __future__ import annotations

import resource

from tesaiot_cli.errors import ConfigError

FD_RESERVE = 64  # descriptors besides the connections: stdio, the selector, files, DNS...


def fd_limit_for(connections: int) -> None:
    """Make sure this process may open ``connections`` sockets (plus a reserve).

    Raises the soft RLIMIT_NOFILE up to the hard limit when that is enough; otherwise
    raises :class:`ConfigError` saying how to raise it. Call before connecting anything.
    """
    needed = connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return
    raise ConfigError(
        f"{connections} connections need about {needed} open files, but this process may open only {hard} "
        f"(ulimit -n: soft {soft}, hard {hard}): raise the limit with `ulimit -n {needed}` in the shell that "
        "starts tesaiot (above the hard limit: as root, or in /etc/security/limits.conf or the service's "
        "LimitNOFILE), or split the fleet over processes with --shard K/M"
    )

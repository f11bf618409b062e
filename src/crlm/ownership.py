"""Who owns a run, a registry version or a staging directory: this host and process (tags ``crlm_host`` and
``crlm_pid``), and whether such an owner is gone. Used by publication (``crlm.publish``) and by the tracking
layer's clean-up of killed jobs' runs (``crlm.tracking``)."""

from __future__ import annotations

import os
import socket


def owner() -> dict[str, str]:
    """This process as the owner of runs, versions and staging directories.

    Returns
    -------
    dict of str to str
        The tags ``crlm_host`` (this host's name) and ``crlm_pid`` (this process's id).
    """
    return {"crlm_host": socket.gethostname(), "crlm_pid": str(os.getpid())}


def owner_dead(tags: dict) -> bool:
    """Whether the owner named by ``tags`` is gone: True only when it ran on this host and its process no
    longer exists (an owner on another host cannot be checked, so it counts as alive).

    Parameters
    ----------
    tags : dict
        Tags carrying ``crlm_host`` and ``crlm_pid`` (``owner()``).

    Returns
    -------
    bool
    """
    host, pid = tags.get("crlm_host"), tags.get("crlm_pid", "")
    if host != socket.gethostname() or not str(pid).isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

"""Where the launcher's commands run: one ``Box`` interface, two kinds, and what SSH needs.

    base.py              the interface (run, put/get files, sync, info) and its errors
    local.py             ``LocalBox``: this machine, the project folder as the workdir
    ssh.py               ``SSHBox``: any SSH host (paramiko; rsync over ssh for the project)
    factory.py           the box spec recorded in state, and the ``Box`` for it (imports both kinds)
    ssh_commands.py      the one builder of every ssh and rsync command line
    known_hosts.py       host keys: trust on first use, then verified
    detached_session.py  the training job's tmux (or screen) session on the box
    log_follow.py        follow a log on the box across dropped connections
"""

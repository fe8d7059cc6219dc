"""The warm worker: a background process that has torch (and the installed third-party packages
models use) imported already, so `archlint check` and the pre-commit hook pay only for the
model's own import and trace, not for `import torch`.

    archlint check net.py        # the first run that must lint starts the worker and waits
                                 # for it; later runs hand their whole command line to it
    archlint worker status       # pid, key, uptime, idle time, requests served
    archlint worker stop

How a run goes through it (client.py): the CLI computes the environment's key
(environment.py), connects to the worker's Unix socket in the per-user runtime folder, and
sends its argv, working folder, environment and stdin/stdout/stderr file descriptors
(SCM_RIGHTS, protocol.py). The worker (server.py) forks a child per request (request.py),
which takes over those descriptors and the environment, and runs the same CLI code the
client would have run, writing straight to the user's terminal; its exit status goes back to
the client. The user's modules are only ever imported in those children (and the per-file
children they fork, archlint/isolation.py), never in the worker itself, so an edit is always
seen; what the worker imports ahead (preload.py) comes from the standard library and
site-packages only.

Nothing here is trusted: a worker that answers with another key or protocol, runs under
another user, does not answer in time, or whose socket is dead is stopped or removed, and the
run goes on in this process. A run never fails because of the worker.

Off with `--no-worker`, `worker = false` in [tool.archlint], or ARCHLINT_NO_WORKER=1, and
by default when CI is set: a one-shot CI job gains nothing from it and must not leave a
process behind.
"""

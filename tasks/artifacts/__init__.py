"""Every file the nodes download: asked for by the config, resolved online once, pinned by a lock.

wanted.py    what the config asks for (offline): one Wanted per artifact, its kind and URLs
lockfile.py  `<config stem>.lock` beside the config: sorted JSON entries, and whether one matches
pins.py      offline: the config's artifacts pinned by the lock, or why Ignition cannot be built
sums.py      strict `sha256sum` lists (the bakery's SHA256SUMS, a release's .sha256sum)
remote.py    asking servers: a file's HTTP status and size, small lists (retries, redirects)
resolve.py   `doit lock`: each artifact resolved by its kind, the lock written once; the check
             that every locked file is still published before a VM is created
ignition.py  every remote source of a node's final Ignition (children too) against the lock
bundle.py    one archive for air-gapped sites: the verified image, every locked file, the lock

Loading the tasks reads only pins.py's offline answer; the network is touched by `doit lock`,
`doit bundle` and VM creation only.
"""

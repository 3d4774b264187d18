"""flatcar-ha: config.yaml -> PKI -> Butane -> Ignition -> libvirt VMs, as doit tasks.

Code map (data flows config -> plan -> stages -> files; the README has the long version):

    errors, paths, run, fsutil, facts, yamlutil   shared basics: exceptions, every path, the one
                                                  subprocess wrapper, safe file writes, fixed facts
    buildroot, written   build/<name>/ as the pipeline's own: claimed, locked, swept of killed
                         runs' leftovers; what was written there (keyed digests), to see edits
    config/    the cluster config: frozen model whose fields declare each setting once, reading
               YAML with its lines, validation (rules across settings in rules.py)
    pki/       cluster CAs, SA key, token, admin.conf: crypto, the set on disk, the admin kubeconfig,
               every credential's expiry
    butane/    the built-in Butane -> Ignition translator (flatcar variant)
    plan/      what to build from a config: Butane layers and their contexts, templates, kubeadm
               documents, secret fragments, translation units, hosts and VM inputs, prune plans
    flatcar/   the Flatcar image: downloads, gpg verification, the verified image cache
    artifacts/ every file the nodes download: asked for by the config, resolved into the lock
               beside it, checked in each node's Ignition, bundled for air-gapped sites
    libvirt/   virsh, domain XML, storage pools and volumes, preflight, what a hypervisor holds
    kube/      the cluster from the host: its API (verified sessions, readiness), etcd (the host's
               short-lived client certificate, etcdctl), HA probes; kubeconfig merges; serving
               certificates, snapshots, retiring a control plane (quorum check, member, Node)
    report/    what `show`, `status`, `verify_ha`, `certs` and `graph` print
    stages/    every doit task creator (task_*) and its actions; only dodo.py imports a stage

Libraries (everything but stages/) never import a stage or doit; tests/test_architecture.py
keeps it so.
"""

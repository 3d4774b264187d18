"""flatcar-ha: config.yaml -> PKI -> Butane -> Ignition -> libvirt VMs, as doit tasks."""

"""Everything the tests share; the fixtures built on it are defined in tests/conftest.py.

pytest puts tests/ on sys.path, so these are imported as `support.<module>`. No test module
imports another test module: what two tests need goes here.

    pipeline      run_doit (the one doit runner: this interpreter, any virtualenv), ok, run_tasks,
                  executed/up_to_date, status_table, build_ignition (doit new_cluster -> Built),
                  run_script/script_command (scripts/ with this interpreter)
    configs       write_config(where, **overrides): small fast config or the project's; cluster_nodes,
                  project_cluster, add_node/drop_node (line edits as a user makes them)
    pki           make_pki, apiserver_pki, write_apiserver_cert (the project's own PKI code);
                  assert_whole_set, admin_signed_by (one consistent PKI set and its admin.conf)
    interrupt     doit killed at its n-th file system change or after a delay (run_killed_at,
                  trace_steps, start_doit), leftovers of killed runs
    fake_api      Kubernetes API stand-in on 127.0.0.1 with mutual TLS (wait, status)
    site          Flatcar release server on 127.0.0.1 that misbehaves on demand; image_cluster
    bakery        a fake sysext-bakery and Cilium CLI release on that server (SHA256SUMS, redirects)
    sysupdate     the real systemd-sysupdate (systemd 254, unpacked into .tools/) against a root
    gpg_keys      throwaway signing keys (good, other, expired, revoked) with the real gpg
    libvirtd      libvirtd + virtlogd under the machine-wide lock; stops only what it started
    vm_clusters   tiny clusters of real VMs on that libvirtd, swept afterwards
    realignition  the real Ignition into a scratch root: apply_ignition, apply_node_ignition,
                  apply_cluster_ignition
    realtools     haproxy, keepalived, systemd-analyze, Quadlet, systemd-networkd on our files
    node_rehearsal  each node's Ignition booted by the real systemd 252 with stand-ins (standins/):
                  RehearsalBuild, BootNode, Scenario; node_boot holds the booting (Node)
    ha_rehearsal  the control planes in network namespaces with the real keepalived, haproxy, etcd
                  (Rehearsal: boot, restore, faults, curl/etcdctl/doit from the host namespace);
                  ha_node one control plane; ha_apiserver the API server stand-in (Node objects in
                  etcd); ha_poller the client through the VIP; ha_scenarios the measured scenarios
    ignition      data URLs, what a config writes, semantic comparison of Ignition configs
    butane_vectors  Butane's conformance vectors and our scripts/butane on them
    layers        reading rendered Butane layers
"""
